"""PNG plots of evaluation results: quality-diversity curves across temperatures, paired differences
against a baseline across temperatures, and training curves.

Figures are built on matplotlib's object API with the Agg canvas rather than pyplot, so plotting
never touches a global backend or figure registry (safe inside Ray workers and tests, no display).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal, Optional

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

Better = Literal["low", "high"]
TRAINING_COLUMNS = 3  # panels per row of the training curves


def new_figure(width: float, height: float) -> Figure:
    """A matplotlib Figure drawn by Agg, not registered with pyplot."""
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)  # attaches itself to fig: layout and saving render with Agg
    return fig


def save_figure(fig: Figure, path: str | Path) -> Path:
    """`fig` as a PNG at ``path`` (parent folders made); returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=120)
    return path


def _check_better(name: str, value: str) -> None:
    if value not in ("low", "high"):
        raise ValueError(f"{name} must be 'low' or 'high', got {value!r}")


def plot_quality_diversity(
    curves: Mapping[str, Sequence[Mapping[str, float]]],
    x: str,
    y: str,
    path: str | Path,
    x_better: Better = "low",
    y_better: Better = "low",
    reference: Optional[Mapping[str, float]] = None,
) -> Path:
    """Save `quality_diversity_figure` as a PNG at ``path`` (parent folders made) and return ``path``."""
    return save_figure(quality_diversity_figure(curves, x, y, x_better, y_better, reference), path)


def quality_diversity_figure(
    curves: Mapping[str, Sequence[Mapping[str, float]]],
    x: str,
    y: str,
    x_better: Better = "low",
    y_better: Better = "low",
    reference: Optional[Mapping[str, float]] = None,
) -> Figure:
    """One line per model (checkpoint) through its points at several softmax temperatures.

    A single temperature can make any model look better (Caccia et al. 2018); comparing whole curves
    on shared axes shows whether one dominates. Each point is a dict with "temperature" and the
    metrics ``x`` and ``y``; points are joined in temperature order and labelled "T=...". The title
    names the corner that is better, from ``x_better`` / ``y_better``. ``reference``: the real text's
    metrics, drawn as a star labelled "real text" (where both ``x`` and ``y`` are in it).
    """
    if not curves:
        raise ValueError("plot_quality_diversity: `curves` is empty; pass {model name: [points...]}")
    _check_better("x_better", x_better)
    _check_better("y_better", y_better)
    fig = new_figure(7, 5.5)
    ax = fig.add_subplot()
    for name, points in curves.items():
        if not points:
            raise ValueError(f"plot_quality_diversity: model {name!r} has no points")
        for key in ("temperature", x, y):
            missing = [i for i, p in enumerate(points) if key not in p]
            if missing:
                raise ValueError(f"plot_quality_diversity: model {name!r} points {missing} lack the key {key!r}")
        ordered = sorted(points, key=lambda p: p["temperature"])
        xs = [p[x] for p in ordered]
        ys = [p[y] for p in ordered]
        (line,) = ax.plot(xs, ys, marker="o", label=name)
        for p in ordered:
            ax.annotate(
                f"T={p['temperature']:g}",
                (p[x], p[y]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=7,
                color=line.get_color(),
            )
    if reference is not None and x in reference and y in reference:
        ax.plot([reference[x]], [reference[y]], marker="*", markersize=14, linestyle="none", color="black", label="real text")
    corner = f"{'lower' if y_better == 'low' else 'upper'}-{'left' if x_better == 'low' else 'right'}"
    ax.set_title(f"{y} vs {x}\nacross temperatures ({corner} is better)")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_differences(series: Mapping[str, Sequence[Mapping[str, object]]], y_label: str, title: str, path: str | Path) -> Path:
    """Save `differences_figure` as a PNG at ``path`` (parent folders made) and return ``path``."""
    return save_figure(differences_figure(series, y_label, title), path)


def differences_figure(series: Mapping[str, Sequence[Mapping[str, object]]], y_label: str, title: str) -> Figure:
    """Each model's paired difference from the baseline against temperature ({model: [{"temperature",
    "difference", "interval": [low, high] or None}]}), its interval as error bars, and the zero line:
    below it the model is better, where the bar crosses it the difference is not significant."""
    fig = new_figure(6.5, 4.2)
    ax = fig.add_subplot()
    ax.axhline(0.0, color="black", linewidth=1)
    offsets = [0.008 * (i - (len(series) - 1) / 2) for i in range(len(series))]  # bars side by side
    for offset, (name, rows) in zip(offsets, series.items()):
        t = [float(r["temperature"]) + offset for r in rows]
        d = [float(r["difference"]) for r in rows]
        low = [d_i - r["interval"][0] if r["interval"] else 0.0 for d_i, r in zip(d, rows)]
        high = [r["interval"][1] - d_i if r["interval"] else 0.0 for d_i, r in zip(d, rows)]
        ax.errorbar(t, d, yerr=[low, high], marker="o", capsize=3, label=name)
    ax.set_xlabel("temperature")
    ax.set_ylabel(y_label)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_training_curves(
    history: Sequence[Mapping[str, float]],
    keys: Sequence[str],
    path: str | Path,
    x_key: str | None = "iteration",
    references: Optional[Mapping[str, float]] = None,
    reference_label: str = "start",
) -> Path:
    """Save `training_curves_figure` as a PNG at ``path`` (parent folders made) and return ``path``."""
    return save_figure(training_curves_figure(history, keys, x_key, references, reference_label), path)


def training_curves_figure(
    history: Sequence[Mapping[str, float]],
    keys: Sequence[str],
    x_key: str | None = "iteration",
    references: Optional[Mapping[str, float]] = None,
    reference_label: str = "start",
) -> Figure:
    """One subplot per metric in ``keys`` against the iteration, in a grid of up to TRAINING_COLUMNS
    columns sharing the x axis, with whole-number iteration ticks.

    The iteration is each record's ``x_key`` value (every record must have it), or the record's
    position in ``history`` when ``x_key`` is None. A record without some metric is skipped for that
    metric only, since evaluation metrics are usually logged less often than losses. ``references``
    ({metric: value}) draws a dashed horizontal line labelled ``reference_label`` on those metrics'
    panels (e.g. the MaskMLE start the adversarial stage should improve on).
    """
    if not history:
        raise ValueError("plot_training_curves: `history` is empty; pass one dict of metrics per iteration")
    if not keys:
        raise ValueError("plot_training_curves: `keys` is empty; name at least one metric to plot")
    if x_key is not None:
        missing = [i for i, record in enumerate(history) if x_key not in record]
        if missing:
            raise ValueError(
                f"plot_training_curves: records {missing[:5]} lack {x_key!r}; pass x_key=None to use positions"
            )
    iterations = [record[x_key] if x_key is not None else i for i, record in enumerate(history)]
    columns = min(TRAINING_COLUMNS, len(keys))
    rows = math.ceil(len(keys) / columns)
    fig = new_figure(4.2 * columns, 2.6 * rows + 0.6)
    grid = fig.subplots(rows, columns, sharex=True, squeeze=False).ravel()
    for ax, key in zip(grid, keys):
        points = [(it, record[key]) for it, record in zip(iterations, history) if key in record]
        if not points:
            raise ValueError(f"plot_training_curves: no record has the metric {key!r}")
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="." if len(points) < 50 else None)
        if references and key in references:
            ax.axhline(references[key], linestyle="--", color="gray", label=reference_label)
            ax.legend(fontsize=7)
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in grid[len(keys):]:  # the grid's empty cells
        ax.remove()
    for ax in grid[max(0, len(keys) - columns) : len(keys)]:  # the lowest panel of each column
        ax.set_xlabel(x_key or "iteration")
        ax.xaxis.set_tick_params(labelbottom=True)
    fig.tight_layout()
    return fig


def plot_sweep(curves: Mapping[str, Sequence[tuple[float, float]]], metric: str, path: str | Path) -> Path:
    """Save `sweep_figure` as a PNG at ``path`` (parent folders made) and return ``path``."""
    return save_figure(sweep_figure(curves, metric), path)


def sweep_figure(curves: Mapping[str, Sequence[tuple[float, float]]], metric: str) -> Figure:
    """`metric` against the iteration, one line per trial of a sweep ({trial: [(iteration, value)...]});
    a trial stopped early is a short line."""
    fig = new_figure(7, 4.5)
    ax = fig.add_subplot()
    for name, points in curves.items():
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
    ax.set_xlabel("iteration")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} of every trial")
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
