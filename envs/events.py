"""Per-step event codes, reported as ``info["event"]`` by every Lethe environment.

Both implementations (MiniGrid class and batched twin) report the same code on the same
step. When several things happen on one step the largest code wins, because the larger
codes are the rarer, more specific moments (an arm entered beats the cue in view).
"""

from __future__ import annotations

NONE = 0
"""Nothing of note."""
CUE_VISIBLE = 1
"""Corridor: the cue ball is in the agent's view."""
JUNCTION_REACHED = 2
"""Corridor: the agent stepped onto the junction cell."""
CORRECT_PORTAL = 3
"""Portal: the agent walked into the correct portal of a room."""
WRONG_PORTAL = 4
"""Portal: the agent walked into the wrong portal and went back to room 0."""
CORRECT_ARM = 5
"""Corridor: the agent entered the arm the cue named (success)."""
WRONG_ARM = 6
"""Corridor: the agent entered the other arm (failure)."""

EVENT_NAMES: dict[int, str] = {
    NONE: "none",
    CUE_VISIBLE: "cue_visible",
    JUNCTION_REACHED: "junction_reached",
    CORRECT_PORTAL: "correct_portal",
    WRONG_PORTAL: "wrong_portal",
    CORRECT_ARM: "correct_arm",
    WRONG_ARM: "wrong_arm",
}
