"""Lethe agents package."""
