"""The model size the agents tests train with: one layer of width 16, two heads (seconds a run)."""

TINY_MODEL = ["--width", "16", "--heads", "2", "--layers", "1"]
