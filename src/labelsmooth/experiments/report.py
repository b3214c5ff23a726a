"""What ``compare`` writes: ``metrics.json``, two pictures and ``report.md``, each written atomically."""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from labelsmooth.experiments.compare import CompareResult
from labelsmooth.experiments.train import RunResult

LABELS = {"accuracy": "accuracy", "nll": "NLL", "ece": "ECE", "miou": "mean IoU"}
PERCENT = ("accuracy", "miou")


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


def _format(mean: float, half: float | None, name: str) -> str:
    scale, digits = (100.0, 1) if name in ("accuracy", "miou") else (1.0, 3)
    text = f"{mean * scale:.{digits}f}"
    return text if half is None else f"{text} ± {half * scale:.{digits}f}"


def format_table(result: CompareResult) -> str:
    """The summary as a Markdown table (accuracy and mean IoU in %), mean ± 95% CI half-width."""
    names = result.metric_names
    header = "| alpha | " + " | ".join(LABELS[n] + (" (%)" if n in PERCENT else "") for n in names)
    lines = [header + " |", "|" + "---|" * (len(names) + 1)]
    for row in result.summary:
        cells = [_format(row[f"{n}_mean"], row[f"{n}_ci95"], n) for n in names]
        lines.append(f"| {row['alpha']:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def noise_statement(result: CompareResult) -> list[str]:
    """One plain sentence per compared alpha and metric."""
    sentences = []
    for c in result.comparisons:
        name = LABELS[c["metric"]]
        scale = 100.0 if c["metric"] in ("accuracy", "miou") else 1.0
        unit = " points" if scale == 100.0 else ""
        diff = f"{c['difference_mean'] * scale:+.3g}{unit}"
        interval = "" if c["difference_ci95"] is None else f" ± {c['difference_ci95'] * scale:.3g}"
        where = f"alpha={c['alpha']:g} vs alpha={c['baseline_alpha']:g}"
        if c["inside_noise"]:
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


def _runs_of(result: CompareResult, alpha: float) -> list[RunResult]:
    return [r for r in result.runs if r.alpha == alpha]


def reliability_png(result: CompareResult) -> bytes:
    """Reliability diagrams side by side, one per alpha, test predictions pooled over seeds."""
    figure, axes = _figure(len(result.alphas))
    for ax, alpha in zip(axes, result.alphas, strict=True):
        runs = _runs_of(result, alpha)
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
        ax.set_title(f"alpha = {alpha:g}   ECE = {row['ece_mean']:.3f}")
        ax.set_xlabel("confidence")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("accuracy")
    axes[0].legend(loc="upper left", fontsize=8)
    return _png(figure)


def penultimate_png(result: CompareResult) -> bytes:
    """Müller et al.'s picture: penultimate activations in the template plane of three classes (seed 0)."""
    figure, axes = _figure(len(result.alphas))
    for ax, alpha in zip(axes, result.alphas, strict=True):
        run = _runs_of(result, alpha)[0]
        ax.set_title(f"alpha = {alpha:g}")
        if run.projection is None or run.projection_labels is None or run.projection_classes is None:
            ax.text(0.5, 0.5, "needs at least three classes", ha="center", va="center")
            ax.set_axis_off()
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


def _tightness_lines(result: CompareResult) -> list[str]:
    values = [(r.alpha, r.cluster_tightness()) for r in result.runs if r.seed == 0]
    shown = [f"alpha={a:g}: {t:.3f}" for a, t in values if t is not None]
    if not shown:
        return []
    return [f"Mean distance to the class centroid over mean distance between centroids in this plane "
            f"(smaller is tighter): {'; '.join(shown)}.", ""]


def report_markdown(result: CompareResult) -> str:
    config = result.config
    seeds = len(result.seeds)
    lines = [
        f"# Does label smoothing help on `{result.dataset}`?",
        "",
        f"{result.task.capitalize()}, {result.num_classes} classes; "
        f"alphas {', '.join(f'{a:g}' for a in result.alphas)}"
        f" ({config.convention} convention), {seeds} seeds each, {config.epochs} epochs, "
        f"label noise {config.label_noise:g}{_augmentation(config)}. Test-split values: mean ± "
        "half-width of the 95% Student-t interval over seeds. ECE: 15 equal-width bins, top label "
        "(Guo et al.'s binning).",
        "",
        format_table(result),
        "",
        "## Which differences are inside the noise",
        "",
        f"Each alpha is compared with alpha={result.alphas[0]:g} run by run (same seed: same initialization, "
        "data order and label noise); a difference is inside the noise when the 95% interval of the paired "
        "difference contains 0.",
        "",
        *(noise_statement(result) or ["- Only one alpha was run: nothing to compare."]),
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
        "Penultimate-layer activations of three classes (seed 0) projected onto the plane through those "
        "classes' last-layer weight vectors. Label smoothing tends to pull each class into a tighter cluster "
        "at equal distance from the other templates.",
        "",
        *_tightness_lines(result),
    ]
    return "\n".join(lines)


def _json_number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_report(result: CompareResult, out: Path) -> list[Path]:
    """Write the four files into ``out`` (created if needed); return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    document = json.loads(json.dumps(result.to_dict()), parse_float=lambda s: _json_number(float(s)))
    files = {
        "metrics.json": (json.dumps(document, indent=2) + "\n").encode(),
        "reliability.png": reliability_png(result),
        "penultimate.png": penultimate_png(result),
        "report.md": report_markdown(result).encode(),
    }
    paths = []
    for name, data in files.items():
        atomic_write(out / name, data)
        paths.append(out / name)
    return paths
