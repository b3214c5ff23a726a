"""The four pictures of a comparison, each rendered as a 150 dpi PNG and an SVG.

* :func:`reliability_figure`: a reliability diagram per alpha (test predictions
  pooled over seeds) with the per-bin counts as a strip under it, at T = 1 or
  (``reliability_ts``) after temperature scaling;
* :func:`metrics_figure`: every metric's mean and 95% interval against alpha,
  at T = 1 and after temperature scaling;
* :func:`curves_figure`: training and validation loss and accuracy per epoch,
  one line per alpha, mean over seeds;
* :func:`penultimate_figure`: Müller et al.'s template-plane picture.

Panels wrap three to a row. An alpha with runs that did not learn is marked
in every figure (its title, legend entry or point). Everything is drawn from
the :class:`~._results.CompareResult` alone.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np

from labelsmooth.experiments._results import CompareResult
from labelsmooth.experiments.evaluate import METRICS, clipped

__all__ = [
    "DPI", "FIGURES", "PER_ROW", "curves_figure", "epoch_means", "figure_names", "metrics_figure",
    "penultimate_figure", "reliability_figure", "render", "scaled_reliability_figure",
]

DPI = 150
PER_ROW = 3
PANEL = 3.6
COLORS = ("tab:blue", "tab:orange", "tab:green")
#: Every figure a report can hold, each written as ``<name>.png`` and ``<name>.svg``.
FIGURES = ("reliability", "reliability_ts", "metrics_vs_alpha", "curves", "penultimate")


def figure_names(result: CompareResult) -> list[str]:
    """The figures drawn for ``result``: no diagram after scaling without a trusted temperature fit, no
    penultimate picture without a projection (the report says why instead of drawing an empty one)."""
    names = list(FIGURES)
    if not any(result.reliability(alpha, scaled=True) for alpha in result.alphas):
        names.remove("reliability_ts")
    if not any(r.projection is not None for r in result.penultimate_runs()):
        names.remove("penultimate")
    return names


def _failed(result: CompareResult, alpha: float) -> str:
    """`` (1 of 3 runs did not learn)`` for an alpha with such runs, else ``""``."""
    runs = result.runs_of(alpha)
    failed = sum(1 for r in runs if not r.learned)
    return f" ({failed} of {len(runs)} runs did not learn)" if failed else ""


def render(figure: Any) -> tuple[bytes, bytes]:
    """``figure`` as PNG (150 dpi) and SVG bytes; the SVG has no date and fixed ids (same bytes each time)."""
    import matplotlib

    png, svg = io.BytesIO(), io.BytesIO()
    figure.savefig(png, format="png", dpi=DPI)
    with matplotlib.rc_context({"svg.hashsalt": "labelsmooth"}):
        figure.savefig(svg, format="svg", metadata={"Date": None})
    return png.getvalue(), svg.getvalue()


def _grid(panels: int, *, height: float = PANEL) -> tuple[Any, list[Any]]:
    """A figure of ``panels`` axes, at most :data:`PER_ROW` to a row (unused cells hidden)."""
    from matplotlib.figure import Figure

    columns = min(panels, PER_ROW)
    rows = math.ceil(panels / columns)
    figure = Figure(figsize=(PANEL * columns, height * rows), layout="constrained")
    axes = list(figure.subplots(rows, columns, squeeze=False).flat)
    for ax in axes[panels:]:
        ax.set_axis_off()
    return figure, axes[:panels]


def _no_runs(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center")
    ax.set_axis_off()


def _reliability_panel(ax: Any, strip: Any, bins: dict[str, Any], title: str) -> None:
    edges = np.asarray(bins["edges"])
    count = np.asarray(bins["count"], dtype=np.float64)
    acc, conf = np.asarray(bins["accuracy"]), np.asarray(bins["confidence"])
    width, used = np.diff(edges)[: len(count)], count > 0
    left = edges[:-1][: len(count)]
    ax.bar(left[used], acc[used], width=width[used], align="edge", color="tab:blue", edgecolor="black",
           linewidth=0.5, label="accuracy")
    ax.bar(left[used], conf[used] - acc[used], bottom=acc[used], width=width[used], align="edge",
           color="none", hatch="///", edgecolor="tab:red", linewidth=0.5, label="gap to confidence")
    ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
    ax.set_title(title, fontsize=9)
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy")
    ax.tick_params(labelbottom=False)
    strip.bar(left[used], count[used], width=width[used], align="edge", color="0.5", edgecolor="black",
              linewidth=0.5)
    strip.set_yscale("log")
    strip.set(xlim=(0, 1), xlabel="confidence", ylabel="count")


def scaled_reliability_figure(result: CompareResult) -> Any:
    """:func:`reliability_figure` after temperature scaling (runs with a trusted fit only)."""
    return reliability_figure(result, scaled=True)


def reliability_figure(result: CompareResult, *, scaled: bool = False) -> Any:
    """One reliability diagram per alpha over a strip of the per-bin counts (log scale).

    The title's ECE is the ECE of the pooled predictions the bars show
    (:meth:`~._results.CompareResult.reliability`); ``scaled``: after
    temperature scaling.
    """
    from matplotlib.figure import Figure

    columns = min(len(result.alphas), PER_ROW)
    rows = math.ceil(len(result.alphas) / columns)
    figure = Figure(figsize=(PANEL * columns, 4.6 * rows), layout="constrained")
    grid = figure.add_gridspec(2 * rows, columns, height_ratios=[3, 1] * rows)
    for k, alpha in enumerate(result.alphas):
        row, column = divmod(k, columns)
        ax = figure.add_subplot(grid[2 * row, column])
        strip = figure.add_subplot(grid[2 * row + 1, column], sharex=ax)
        bins = result.reliability(alpha, scaled=scaled)
        if bins is None:
            _no_runs(ax, "no trusted temperature fit" if scaled else "no finished run with finite outputs")
            strip.set_axis_off()
            continue
        ece = "ECE after TS" if scaled else "ECE"
        _reliability_panel(ax, strip, bins, f"alpha = {alpha:g}   {ece} = {bins['ece']:.3f}"
                           + _failed(result, alpha).replace(" of ", "/").replace(" runs", ""))
        if k == 0:
            ax.legend(loc="upper left", fontsize=7)
    return figure


def _errorbar(ax: Any, result: CompareResult, key: str, **style: Any) -> None:
    scale = 100.0 if METRICS.get(key.removesuffix("_ts"), METRICS["nll"]).percent else 1.0
    rows = [r for r in result.summary if r[f"{key}_mean"] is not None]
    if not rows:
        return
    x = [r["alpha"] for r in rows]
    y = [r[f"{key}_mean"] * scale for r in rows]
    bounds = [clipped(r[f"{key}_mean"], r[f"{key}_ci95"] or 0.0, key) for r in rows]
    below = [max(m - low * scale, 0.0) for m, (low, _) in zip(y, bounds, strict=True)]
    above = [max(high * scale - m, 0.0) for m, (_, high) in zip(y, bounds, strict=True)]
    ax.errorbar(x, y, yerr=[below, above], capsize=3, marker="o", markersize=3, linewidth=1, **style)
    failed = [(a, b) for a, b in zip(x, y, strict=True) if _failed(result, a)]
    if failed:
        ax.scatter(*zip(*failed, strict=True), marker="x", s=60, color="black", zorder=3,
                   label="runs that did not learn")


def metrics_figure(result: CompareResult) -> Any:
    """Each metric's mean and 95% interval against alpha: at T = 1 (solid) and after scaling (dashed)."""
    names = [*result.metric_names, "temperature"]
    figure, axes = _grid(len(names), height=3.0)
    for ax, name in zip(axes, names, strict=True):
        if name == "temperature":
            _errorbar(ax, result, "temperature", color="tab:green", label="fitted T")
            ax.axhline(1.0, color="0.5", linewidth=0.8, linestyle=":")
            ax.set_title("temperature T (validation NLL)", fontsize=9)
        else:
            metric = METRICS[name]
            _errorbar(ax, result, name, color="tab:blue", label="T = 1")
            if not metric.scale_invariant:
                _errorbar(ax, result, f"{name}_ts", color="tab:red", linestyle="--",
                          label="temperature-scaled")
            better = "higher" if metric.higher_is_better else "lower"
            ax.set_title(f"{metric.label}{' (%)' if metric.percent else ''} ({better} is better)", fontsize=9)
        ax.set_xlabel("alpha")
        ax.set_xticks(result.alphas)
    if axes and axes[min(2, len(axes) - 1)].get_legend_handles_labels()[0]:
        axes[min(2, len(axes) - 1)].legend(fontsize=7)
    return figure


def epoch_means(result: CompareResult, alpha: float, key: str) -> tuple[list[int], list[float]]:
    """Epochs and the mean of ``key`` over ``alpha``'s seeds at each (finite values only)."""
    table: dict[int, list[float]] = {}
    for run in result.runs_of(alpha):
        for entry in run.history:
            value = entry.get(key)
            if value is not None and math.isfinite(value):
                table.setdefault(entry["epoch"], []).append(value)
    epochs = sorted(table)
    return epochs, [float(np.mean(table[e])) for e in epochs]


def curves_figure(result: CompareResult) -> Any:
    """Loss and accuracy per epoch, mean over seeds: training solid, validation dashed, a color per alpha."""
    figure, (loss_ax, acc_ax) = _grid(2)
    for k, alpha in enumerate(result.alphas):
        color = f"C{k % 10}"
        for ax, key in ((loss_ax, "loss"), (acc_ax, "accuracy")):
            ax.plot(*epoch_means(result, alpha, f"train_{key}"), color=color, linewidth=1.2,
                    label=f"alpha = {alpha:g}{_failed(result, alpha)}")
            ax.plot(*epoch_means(result, alpha, f"val_{key}"), color=color, linewidth=1.2, linestyle="--")
    loss_ax.set_title("loss (train: smoothed objective, solid; validation: NLL, dashed)", fontsize=8)
    acc_ax.set_title("accuracy (train solid, validation dashed)", fontsize=8)
    for ax in (loss_ax, acc_ax):
        ax.set_xlabel("epoch (mean over seeds)")
    if loss_ax.get_legend_handles_labels()[0]:
        loss_ax.legend(loc="best", fontsize=8)
    return figure


def _limits(result: CompareResult) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """One square window that holds every panel's points (with a 5% margin)."""
    points = [r.projection for r in result.penultimate_runs() if r.projection is not None]
    stacked = np.concatenate(points) if points else np.empty((0, 2))
    # A run whose weights became NaN has NaN coordinates: they are not drawn, so they set no limit.
    stacked = stacked[np.isfinite(stacked).all(1)]
    if len(stacked) == 0:
        return None
    low, high = stacked.min(0), stacked.max(0)
    centre, half = (low + high) / 2, max(float((high - low).max()) / 2, 1e-12) * 1.05
    return (centre[0] - half, centre[0] + half), (centre[1] - half, centre[1] + half)


def penultimate_figure(result: CompareResult) -> Any:
    """Penultimate activations of three classes in their template plane, one panel per alpha (lowest seed).

    With ``result.penultimate_scale == "shared"`` every panel has the same
    axes, so spreads can be compared by eye across alphas.
    """
    figure, axes = _grid(len(result.alphas))
    limits = _limits(result) if result.penultimate_scale == "shared" else None
    runs = {r.alpha: r for r in result.penultimate_runs()}
    for ax, alpha in zip(axes, result.alphas, strict=True):
        ax.set_title(f"alpha = {alpha:g}{_failed(result, alpha)}", fontsize=9)
        run = runs.get(alpha)
        if run is None or run.projection is None or run.projection_labels is None \
                or run.projection_classes is None:
            _no_runs(ax, "no finished run" if run is None else "no picture (see the report)")
            continue
        for k, color in zip(run.projection_classes, COLORS, strict=True):
            points = run.projection[run.projection_labels == k]
            ax.scatter(points[:, 0], points[:, 1], s=4, alpha=0.5, color=color, label=result.class_names[k])
        ax.set_xlabel("template-plane axis 1")
        ax.set_ylabel("template-plane axis 2")
        if limits is not None:
            ax.set(xlim=limits[0], ylim=limits[1])
            ax.set_aspect("equal", adjustable="box")
        else:
            ax.set_aspect("equal", adjustable="datalim")
        ax.legend(loc="best", fontsize=7, markerscale=3)
    return figure
