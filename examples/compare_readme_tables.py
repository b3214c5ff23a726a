"""Rerun the comparisons whose results the README shows, and write their tables into README.md.

    python examples/compare_readme_tables.py                  # every table (about 30 min on 2 shared cores)
    python examples/compare_readme_tables.py mnist1d-noise40  # one of them

Each comparison writes its full report to ``runs/readme/<name>``; its headline table, verdicts, the answer
against temperature scaling, and the early-stopping table and answer replace what stands between
``<!-- compare: <name> -->`` and
``<!-- /compare -->`` in README.md, with the command, the run time and the commit. Nothing else in the
README changes, so every number there comes from the last run of this script.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from labelsmooth.experiments import compare
from labelsmooth.experiments.provenance import git_commit
from labelsmooth.experiments.report import (
    atomic_write,
    early_stopping_answer,
    early_stopping_table,
    format_table,
    temperature_answer,
    verdicts,
)

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

#: name -> (the equivalent command, compare()'s arguments).
COMPARISONS = {
    "digits": ("labelsmooth compare", {"dataset": "digits"}),
    "shapes": ("labelsmooth compare --dataset shapes", {"dataset": "shapes"}),
    # 3 alphas x 10 seeds x 40 epochs of the small 1-D CNN, two worker processes (bit-identical to one).
    "mnist1d-noise": (
        "labelsmooth compare --dataset mnist1d --label-noise 0.3 --alphas 0 0.1 0.3 --seeds 10 --epochs 40 "
        "--jobs 2",
        {"dataset": "mnist1d", "label_noise": 0.3, "alphas": (0.0, 0.1, 0.3), "seeds": 10, "epochs": 40,
         "jobs": 2},
    ),
    # Wei et al. (2022)'s setting: heavy symmetric noise, negative smoothing beside positive, against early
    # stopping. 4 alphas x 10 seeds x 40 epochs, two worker processes.
    "mnist1d-noise40": (
        "labelsmooth compare --dataset mnist1d --label-noise 0.4 --alphas 0 -0.2 0.1 0.3 --allow-negative "
        "--seeds 10 --epochs 40 --jobs 2",
        {"dataset": "mnist1d", "label_noise": 0.4, "alphas": (0.0, -0.2, 0.1, 0.3), "allow_negative": True,
         "seeds": 10, "epochs": 40, "jobs": 2},
    ),
    # The same with Wei et al.'s warm-up: 15 epochs of plain cross-entropy (about where alpha 0's validation
    # NLL is lowest, 14.3 +- 1.7 above), then each alpha for the remaining 25.
    "mnist1d-noise40-warmup": (
        "labelsmooth compare --dataset mnist1d --label-noise 0.4 --alphas 0 -0.2 0.1 0.3 --allow-negative "
        "--warmup-epochs 15 --seeds 10 --epochs 40 --jobs 2",
        {"dataset": "mnist1d", "label_noise": 0.4, "alphas": (0.0, -0.2, 0.1, 0.3), "allow_negative": True,
         "warmup_epochs": 15, "seeds": 10, "epochs": 40, "jobs": 2},
    ),
}


def block(name: str, commit: str | None) -> str:
    """Run comparison ``name`` and return the Markdown that goes between its markers."""
    command, arguments = COMPARISONS[name]
    started = time.perf_counter()
    result = compare(**arguments, out=ROOT / "runs" / "readme" / name, overwrite=True)
    minutes = (time.perf_counter() - started) / 60
    at = "outside git" if commit is None else f"commit {commit[:12]}" + (
        " with uncommitted changes" if "uncommitted" in commit else "")
    return "\n".join([
        f"`{command}` ({minutes:.1f} min on a shared 2-core machine, {at}; written by "
        f"`python examples/compare_readme_tables.py {name}`):",
        "",
        format_table(result),
        "",
        *verdicts(result),
        *temperature_answer(result),
        "",
        "Against early stopping (each run also measured with the weights of its epoch of lowest validation "
        "NLL):",
        "",
        early_stopping_table(result),
        "",
        *early_stopping_answer(result),
    ])


def replace(text: str, name: str, body: str) -> str:
    """``text`` with what stands between ``name``'s opening marker and the next closing one set to ``body``
    (an empty block too: a pattern that needs a newline before the closing marker would run on to the next
    block's and eat everything between)."""
    opening, closing = f"<!-- compare: {name} -->\n", "<!-- /compare -->"
    start = text.find(opening)
    if start < 0:
        raise SystemExit(f"README.md has no '{opening.strip()}' ... '{closing}' block")
    start += len(opening)
    end = text.find(closing, start)
    if end < 0 or "<!-- compare: " in text[start:end]:
        raise SystemExit(f"README.md's '{opening.strip()}' block has no '{closing}' before the next block")
    return text[:start] + body + "\n" + text[end:]


def main(names: list[str]) -> None:
    unknown = sorted(set(names) - set(COMPARISONS))
    if unknown:
        raise SystemExit(f"unknown comparison(s) {unknown}; expected some of {sorted(COMPARISONS)}")
    # The commit before this script writes anything: the README's own edits by earlier tables of this run
    # are not "uncommitted changes" of the code that made the numbers.
    commit = git_commit(ROOT)
    for name in names or list(COMPARISONS):
        body = block(name, commit)
        # Read and write per comparison: a long run's table is kept even if a later one is stopped.
        atomic_write(README, replace(README.read_text(), name, body).encode())
        print(f"README.md: {name} updated", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
