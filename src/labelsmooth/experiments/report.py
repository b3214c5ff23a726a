"""What ``compare`` writes beside ``runs.jsonl``: ``metrics.json``, three pictures and ``report.md``.

Each file is written atomically, and everything comes from the
:class:`~labelsmooth.experiments.compare.CompareResult`, which comes from the
run store alone.
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from labelsmooth.experiments.evaluate import METRICS
from labelsmooth.experiments.run import RunResult
from labelsmooth.experiments.stats import NOT_COMPARABLE

if TYPE_CHECKING:  # compare writes the report: an import at run time would be a cycle
    from labelsmooth.experiments.compare import CompareResult

__all__ = [
    "atomic_write", "curves_png", "format_table", "noise_statement", "number", "penultimate_png",
    "reliability_png", "report_markdown", "warning", "write_report"
]

#: Printed numbers smaller than this (in their unit) are float rounding of an exact 0: they print as 0.
ZERO = 1e-9


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        # mkstemp creates the file private (0600); give it the mode a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def number(value: float | None, spec: str) -> str:
    """``value`` formatted with ``spec``; rounding noise around 0 (``-9.25e-16``) prints as 0, NaN as n/a.

    Example:
        >>> number(-9.25e-16, "+.3g"), number(-4.16334e-17, ".3g"), number(0.0123, "+.3g")
        ('0', '0', '+0.0123')
    """
    if value is None or not math.isfinite(value):
        return "n/a"
    if abs(value) < ZERO:
        value = 0.0
    text = format(value, spec)
    # "-0.0" and "+0" say a sign the number does not have.
    return text.lstrip("+-") if float(text) == 0 else text


def _scale(name: str) -> float:
    return 100.0 if METRICS[name].percent else 1.0


def _format(mean: float, half: float | None, name: str) -> str:
    spec = ".1f" if METRICS[name].percent else ".3f"
    text = number(mean * _scale(name), spec)
    return text if half is None else f"{text} ± {number(half * _scale(name), spec)}"


def format_table(result: CompareResult) -> str:
    """The summary as a Markdown table (rates in %), mean ± 95% CI half-width."""
    names = result.metric_names
    header = "| alpha | seeds | " + " | ".join(METRICS[n].label + (" (%)" if METRICS[n].percent else "")
                                               for n in names)
    lines = [header + " |", "|" + "---|" * (len(names) + 2)]
    for row in result.summary:
        cells = [_format(row[f"{n}_mean"], row[f"{n}_ci95"], n) for n in names]
        lines.append(f"| {row['alpha']:g} | {row['n_seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def warning(result: CompareResult) -> str | None:
    """One line saying which runs did not learn and why (``None`` when every run learned)."""
    failed = result.not_learned
    if not failed:
        return None
    first = failed[0]
    return (f"{len(failed)} of {len(result.runs)} runs did not learn "
            f"(alpha={first.alpha:g} seed {first.seed}: "
            f"{first.check['reasons'][0]}); their comparisons are {NOT_COMPARABLE!r}")


def noise_statement(result: CompareResult) -> list[str]:
    """One plain sentence per compared alpha and metric."""
    sentences = []
    for c in result.comparisons:
        name, scale = METRICS[c["metric"]].label, _scale(c["metric"])
        unit = " points" if METRICS[c["metric"]].percent else ""
        diff = f"{number(c['difference_mean'] * scale, '+.3g')}{unit}"
        interval = "" if c["difference_ci95"] is None else f" ± {number(c['difference_ci95'] * scale, '.3g')}"
        where = f"alpha={c['alpha']:g} vs alpha={c['baseline_alpha']:g}"
        if c["verdict"] == NOT_COMPARABLE:
            sentences.append(f"- {name}, {where}: {diff}{interval}. **Not comparable**: a run did not learn.")
        elif c["inside_noise"]:
            sentences.append(f"- {name}, {where}: {diff}{interval}. **Inside the noise**: the 95% interval "
                             "of the paired difference contains 0.")
        else:
            sentences.append(f"- {name}, {where}: {diff}{interval}. Outside the noise: {c['verdict']}.")
    return sentences


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def _figure(panels: int) -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(3.6 * panels, 3.6), layout="constrained")
    axes = figure.subplots(1, panels, squeeze=False)[0]
    return figure, list(axes)


def _no_runs(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center")
    ax.set_axis_off()


def reliability_png(result: CompareResult) -> bytes:
    """Reliability diagrams side by side, one per alpha, test predictions pooled over seeds."""
    figure, axes = _figure(len(result.alphas))
    for ax, alpha in zip(axes, result.alphas, strict=True):
        runs = [r for r in result.runs_of(alpha) if r.bins.total > 0]
        if not runs:
            _no_runs(ax, "no finished run with finite outputs")
            continue
        edges = runs[0].bins.edges.numpy()
        count = sum(r.bins.count.numpy() for r in runs)
        conf = sum(r.bins.confidence.numpy() * r.bins.count.numpy() for r in runs) / np.maximum(count, 1)
        acc = sum(r.bins.accuracy.numpy() * r.bins.count.numpy() for r in runs) / np.maximum(count, 1)
        width = np.diff(edges)
        used = count > 0
        ax.bar(edges[:-1][used], acc[used], width=width[used], align="edge", color="tab:blue",
               edgecolor="black", linewidth=0.5, label="accuracy")
        ax.bar(edges[:-1][used], conf[used] - acc[used], bottom=acc[used], width=width[used], align="edge",
               color="none", hatch="///", edgecolor="tab:red", linewidth=0.5, label="gap to confidence")
        ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
        row = next(s for s in result.summary if s["alpha"] == alpha)
        ax.set_title(f"alpha = {alpha:g}   ECE = {number(row['ece_mean'], '.3f')}")
        ax.set_xlabel("confidence")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("accuracy")
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(loc="upper left", fontsize=8)
    return _png(figure)


def penultimate_png(result: CompareResult) -> bytes:
    """Müller et al.'s picture: penultimate activations in the template plane of three classes.

    One panel per alpha, from its lowest finished seed.
    """
    figure, axes = _figure(len(result.alphas))
    for ax, alpha in zip(axes, result.alphas, strict=True):
        runs = result.runs_of(alpha)
        ax.set_title(f"alpha = {alpha:g}")
        if not runs:
            _no_runs(ax, "no finished run")
            continue
        run = runs[0]
        if run.projection is None or run.projection_labels is None or run.projection_classes is None:
            _no_runs(ax, "no picture (see the report)")
            continue
        for k, color in zip(run.projection_classes, ("tab:blue", "tab:orange", "tab:green"), strict=True):
            points = run.projection[run.projection_labels == k]
            ax.scatter(points[:, 0], points[:, 1], s=4, alpha=0.5, color=color, label=result.class_names[k])
        ax.set_xlabel("template-plane axis 1")
        ax.set_aspect("equal", adjustable="datalim")
        ax.legend(loc="best", fontsize=8, markerscale=3)
    axes[0].set_ylabel("template-plane axis 2")
    return _png(figure)


def _augmentation(config: Any) -> str:
    parts = [f"{name} {value:g}" for name, value in (("MixUp", config.mixup), ("CutMix", config.cutmix))
             if value is not None]
    return (", with " + " and ".join(parts)) if parts else ""


def _first_runs(result: CompareResult) -> list[RunResult]:
    """The lowest finished seed of every alpha (the penultimate picture's runs)."""
    return [runs[0] for runs in map(result.runs_of, result.alphas) if runs]


def _tightness_lines(result: CompareResult) -> list[str]:
    values = [(r.alpha, r.cluster_tightness()) for r in _first_runs(result)]
    shown = [f"alpha={a:g}: {t:.3f}" for a, t in values if t is not None]
    if not shown:
        return []
    return [f"Mean distance to the class centroid over mean distance between centroids in this plane "
            f"(smaller is tighter): {'; '.join(shown)}.", ""]


def curves_png(result: CompareResult) -> bytes:
    """Training curves: loss and accuracy per epoch, train (solid) and validation (dashed), every run."""
    figure, (loss_ax, acc_ax) = _figure(2)
    colors = [f"C{k % 10}" for k in range(len(result.alphas))]
    for alpha, color in zip(result.alphas, colors, strict=True):
        for k, run in enumerate(result.runs_of(alpha)):
            epochs = [entry["epoch"] for entry in run.history]
            for ax, key in ((loss_ax, "loss"), (acc_ax, "accuracy")):
                label = f"alpha = {alpha:g}" if k == 0 else None
                train = [e[f"train_{key}"] for e in run.history]
                ax.plot(epochs, train, color=color, linewidth=1, label=label)
                val = [e[f"val_{key}"] for e in run.history]
                if all(x is not None for x in val):
                    ax.plot(epochs, val, color=color, linewidth=1, linestyle="--")
    loss_ax.set_title("loss (train: smoothed objective; validation: NLL, dashed)", fontsize=8)
    acc_ax.set_title("accuracy (train solid, validation dashed)", fontsize=8)
    for ax in (loss_ax, acc_ax):
        ax.set_xlabel("epoch")
    if loss_ax.get_legend_handles_labels()[0]:
        loss_ax.legend(loc="best", fontsize=8)
    return _png(figure)


def _opening(result: CompareResult) -> list[str]:
    """The warnings the report opens with: runs that did not learn, an interrupted comparison."""
    lines = []
    text = warning(result)
    if text is not None:
        lines += [f"> **Warning: {text}.** See `runs[i][\"learned_check\"]` in metrics.json and "
                  "curves.png.", ""]
    if result.partial:
        lines += [f"> **Partial report**: interrupted after {len(result.runs)} of "
                  f"{len(result.alphas) * len(result.seeds)} runs; `--resume` finishes the rest.", ""]
    return lines


def _setup(result: CompareResult) -> str:
    config = result.config
    return (f"{result.task.capitalize()}, {result.num_classes} classes, "
            f"model `{result.settings.get('model')}`; "
            f"alphas {', '.join(f'{a:g}' for a in result.alphas)} ({config.convention} convention), "
            f"{len(result.seeds)} seeds each, {config.epochs} epochs, batches of {config.batch_size}, "
            f"lr {config.lr:g}, label noise {config.label_noise:g}{_augmentation(config)}. "
            "Test-split values: mean ± half-width of the 95% Student-t interval over seeds. "
            "ECE: 15 equal-width bins, top label (Guo et al.'s binning).")


def report_markdown(result: CompareResult) -> str:
    lines = [
        *_opening(result),
        f"# Does label smoothing help on `{result.dataset}`?",
        "",
        _setup(result),
        "",
        *[f"- {note}" for note in result.notes],
        *([""] if result.notes else []),
        format_table(result),
        "",
        "## Which differences are inside the noise",
        "",
        f"Each alpha is compared with alpha={result.alphas[0]:g} run by run (same seed: same initialization, "
        "data order and label noise); a difference is inside the noise when the 95% interval of the paired "
        "difference contains 0. A comparison that involves a run that did not learn (test accuracy not above "
        "the majority-class rate, one-sided binomial test at 1%, or a training loss that became "
        "non-finite or ended above its first epoch's) is not comparable.",
        "",
        *(noise_statement(result) or ["- Only one alpha was run: nothing to compare."]),
        "",
        "## Training curves",
        "",
        "![training curves](curves.png)",
        "",
        "## Reliability diagrams",
        "",
        "![reliability diagrams](reliability.png)",
        "",
        "Bars: accuracy per confidence bin (test predictions of all seeds); hatched: the gap to the bin's "
        "mean confidence. Bars below the diagonal mean over-confidence, above it under-confidence.",
        "",
        "## Penultimate layer (Müller et al., 2019)",
        "",
        "![penultimate-layer activations](penultimate.png)",
        "",
        "Penultimate-layer activations of three classes (first seed) projected onto the plane through those "
        "classes' last-layer weight vectors. Label smoothing tends to pull each class into a tighter cluster "
        "at equal distance from the other templates.",
        "",
        *_tightness_lines(result),
    ]
    return "\n".join(lines)


def write_report(result: CompareResult, out: Path) -> list[Path]:
    """Write ``metrics.json``, the three pictures and ``report.md`` into ``out`` (created if needed)."""
    out.mkdir(parents=True, exist_ok=True)
    # Non-finite numbers (a run whose loss diverged) become null: JSON has no NaN.
    document = json.loads(json.dumps(result.to_dict()), parse_constant=lambda _: None)
    files = {
        "metrics.json": (json.dumps(document, indent=2) + "\n").encode(),
        "reliability.png": reliability_png(result),
        "penultimate.png": penultimate_png(result),
        "curves.png": curves_png(result),
        "report.md": report_markdown(result).encode(),
    }
    paths = []
    for name, data in files.items():
        atomic_write(out / name, data)
        paths.append(out / name)
    return paths
