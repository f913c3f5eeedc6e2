"""A picture of a frontier: held-out F1 against GFLOPs and against measured latency, the searched
frontier next to its margin points, constant-ratio configurations and the full model (needs
matplotlib)."""

from __future__ import annotations

from pathlib import Path

from .files import atomic_write
from .frontier import Frontier


def plot_frontier(frontier: Frontier, out: str | Path, title: str = "") -> Path:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plotting needs matplotlib: pip install matplotlib") from None

    axes_of = [
        (
            "gflops_at_mean_length",
            f"GFLOPs per window at the held-out mean length "
            f"({frontier.heldout.get('mean_window_length', 0):.0f} tokens)",
        ),
        ("latency_ms_batch1", "latency of one window, ms (measured)"),
    ]
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for axis, (key, label) in zip(axes, axes_of, strict=True):
        _draw(axis, frontier, key, label)
    held = frontier.heldout
    figure.suptitle(
        f"{title}: {held.get('questions', '?')} held-out questions; {frontier.machine}", fontsize=9
    )
    figure.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:  # whole or not at all; the format by the name's suffix, which the staging name lacks
        atomic_write(out, lambda staging: figure.savefig(staging, dpi=110, format=out.suffix[1:].lower()))
    finally:
        plt.close(figure)
    return out


def _draw(axis, frontier: Frontier, key: str, label: str) -> None:
    """One panel: held-out F1 against the point attribute `key`."""
    series = [
        (
            frontier.constant_ratio,
            {"marker": "s", "linestyle": "none", "color": "tab:gray"},
            "constant ratio (every layer keeps one share)",
        ),
        (frontier.points, {"marker": "o", "color": "tab:blue"}, "searched frontier (shares)"),
        (
            frontier.margin_points,
            {"marker": "D", "color": "tab:orange"},
            "margin points (GFLOPs: the mean the windows kept)",
        ),
    ]
    for members, style, name in series:
        shown = [p for p in members if getattr(p, key) is not None]
        if shown:
            axis.plot([getattr(p, key) for p in shown], [p.heldout_f1 for p in shown], label=name, **style)
    full = frontier.full
    if getattr(full, key) is not None:
        style = {"marker": "*", "s": 250, "color": "tab:red", "zorder": 3, "label": "full model"}
        axis.scatter(getattr(full, key), full.heldout_f1, **style)
    axis.set_xlabel(label)
    axis.set_ylabel("held-out F1")
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right")
