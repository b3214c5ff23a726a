"""``examples/compare_your_model.py`` runs: a user-defined network on generated data, end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "compare_your_model.py"


def test_compare_your_model_example_learns_and_writes_the_report(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, str(EXAMPLE), str(out)], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("alpha=0: accuracy ") and lines[1].startswith("alpha=0.1: accuracy ")
    assert lines[-1] == f"learned: True; report: {out}/report.md"
    document = json.loads((out / "metrics.json").read_text())
    assert document["config"]["model"] == "__main__.make_model"
    assert len(document["runs"]) == 6 and all(run["learned"] for run in document["runs"])
    assert all(run["accuracy"] > 0.8 for run in document["runs"])
    assert document["config"]["penultimate"] == "classify"
    report = (out / "report.md").read_text()
    assert all(f"]({name}.png)" in report for name in ("curves", "reliability", "penultimate",
                                                        "metrics_vs_alpha"))
    assert "against temperature scaling at alpha=0: " in result.stdout


def test_every_readme_table_has_its_markers_and_only_they_are_replaced():
    """``examples/compare_readme_tables.py`` writes the README's results tables between markers."""
    import importlib.util

    path = EXAMPLE.with_name("compare_readme_tables.py")
    spec = importlib.util.spec_from_file_location("compare_readme_tables", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    readme = script.README.read_text()
    for name in script.COMPARISONS:
        assert readme.count(f"<!-- compare: {name} -->\n") == 1, name
    text = "before\n<!-- compare: a -->\nold\nlines\n<!-- /compare -->\nafter <!-- compare: b -->\n"
    assert script.replace(text, "a", "new") == ("before\n<!-- compare: a -->\nnew\n<!-- /compare -->\n"
                                                "after <!-- compare: b -->\n")
    with pytest.raises(SystemExit, match="no '<!-- compare: c -->'"):
        script.replace(text, "c", "new")
    # An empty block is filled, and the next block is left whole.
    empty = "<!-- compare: a -->\n<!-- /compare -->\nkeep\n<!-- compare: b -->\nb\n<!-- /compare -->\n"
    assert script.replace(empty, "a", "new") == ("<!-- compare: a -->\nnew\n<!-- /compare -->\nkeep\n"
                                                 "<!-- compare: b -->\nb\n<!-- /compare -->\n")
    with pytest.raises(SystemExit, match="has no '<!-- /compare -->' before the next block"):
        script.replace("<!-- compare: a -->\nx\n<!-- compare: b -->\n<!-- /compare -->\n", "a", "new")
    # Every block of the README closes before the next one opens.
    blocks = readme.split("<!-- compare: ")[1:]
    assert all(block.count("<!-- /compare -->") == 1 for block in blocks)
