"""matplotlib for files, never a window: the one import that analysis, compare and the demo share."""

from __future__ import annotations


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (unless a backend was already chosen)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt
