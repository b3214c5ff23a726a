"""The ``labelsmooth`` command: help, compare end to end, explain, and one-line errors on bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("click")
from labelsmooth.cli import _join_variadic, main
from test_experiments import make_image_folder, make_table


def run(capsys, *args):
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.parametrize("args", [["--help"], ["compare", "--help"], ["explain", "--help"], []],
                         ids=["main", "compare", "explain", "no-arguments"])
def test_help(capsys, args):
    status, out, _ = run(capsys, *args)
    assert status == 0
    assert "Usage: labelsmooth" in out


def test_python_dash_m_and_console_script():
    result = subprocess.run([sys.executable, "-m", "labelsmooth", "explain", "--alpha", "0.1"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "1.0148 nats" in result.stdout
    script = Path(sys.executable).with_name("labelsmooth")
    if not script.exists():
        pytest.skip("console script not installed next to this interpreter")
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "compare" in result.stdout


def test_compare_digits_end_to_end(capsys, tmp_path):
    status, out, _ = run(capsys, "compare", "--epochs", "1", "--seeds", "2", "--alphas", "0", "0.05", "0.1",
                         "--out", tmp_path / "out")
    assert status == 0
    assert "| alpha | accuracy (%) | NLL | ECE |" in out
    document = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert [row["alpha"] for row in document["summary"]] == [0.0, 0.05, 0.1]
    assert len(document["runs"]) == 6


def test_compare_label_noise_and_others_convention(capsys, tmp_path):
    table = make_table(tmp_path / "t.csv")
    status, _, _ = run(capsys, "compare", "--dataset", table, "--label-column", "species", "--epochs", "1",
                       "--seeds", "2", "--label-noise", "0.2", "--convention", "others",
                       "--out", tmp_path / "o")
    assert status == 0
    config = json.loads((tmp_path / "o" / "metrics.json").read_text())["config"]
    assert config["label_noise"] == 0.2 and config["convention"] == "others"


def test_compare_image_folder(capsys, tmp_path):
    folder = make_image_folder(tmp_path / "pets")
    status, out, _ = run(capsys, "compare", "--dataset", folder, "--epochs", "1", "--seeds", "2",
                         "--out", tmp_path / "o")
    assert status == 0 and "ECE" in out
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["dataset"] == "pets"


def test_explain_numbers(capsys):
    status, out, _ = run(capsys, "explain", "--alpha", "0.1", "--classes", "1000")
    assert status == 0
    # uniform: 1 - 0.1 + 0.1/1000 on the true class; entropy of that target, about 1.01 nats.
    assert "0.9001" in out and "1.0148 nats" in out
    assert "others" in out and "0.0999" in out
    # The same number read in the other convention is a different target: 1 - 0.1 on the true class.
    same_alpha = next(line for line in out.splitlines() if "same alpha" in line).split()
    assert same_alpha[:3] == ["others", "0.1", "0.9"] and "1.0158" in same_alpha
    status, out, _ = run(capsys, "explain", "--alpha", "0.1", "--classes", "1000", "--convention", "others")
    assert status == 0 and "0.1001" in out and "1.0158 nats" in out


def bad_inputs(tmp_path: Path) -> dict[str, tuple[list[object], str]]:
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "a.png").write_bytes(b"")
    table = make_table(tmp_path / "t.csv")
    broken = make_image_folder(tmp_path / "broken", per_class=2)
    (broken / "dog" / "x.png").write_text("not an image")
    (tmp_path / "file").write_text("x")
    return {
        "missing-path": (["compare", "--dataset", tmp_path / "nope"], "dataset: expected"),
        "no-class-subfolders": (["compare", "--dataset", flat], "at least two class subfolders"),
        "unreadable-image": (["compare", "--dataset", broken], "readable image files"),
        "no-label-column": (["compare", "--dataset", table], "label_column: expected a column"),
        "alpha-above-one": (["compare", "--alphas", "0", "1.5"], "alphas: expected a real number in [0, 1]"),
        "alpha-negative": (["compare", "--alphas", "-0.1"], "alphas: expected a real number in [0, 1]"),
        "alpha-not-a-number": (["compare", "--alphas", "abc"], "alphas: expected numbers"),
        "one-seed-with-ci": (["compare", "--seeds", "1"], "seeds: expected at least 2 seeds"),
        "out-is-a-file": (["compare", "--out", tmp_path / "file"], "out: expected a directory"),
        "bad-device": (["compare", "--device", "tpu9"], "device: expected"),
        "negative-mixup": (["compare", "--mixup", "-0.5"], "mixup: expected a finite real number >= 0"),
        "cutmix-on-table": (["compare", "--dataset", table, "--label-column", "species", "--cutmix", "1"],
                            "cutmix: expected image data"),
        "unknown-option": (["compare", "--bogus"], "No such option"),
        "explain-alpha": (["explain", "--alpha", "2"], "alpha: expected a real number in [0, 1]"),
        "explain-classes": (["explain", "--classes", "1"], "classes: expected an int >= 2"),
    }


CASES = ["missing-path", "no-class-subfolders", "unreadable-image", "no-label-column", "alpha-above-one",
         "alpha-negative", "alpha-not-a-number", "one-seed-with-ci", "out-is-a-file", "bad-device",
         "negative-mixup", "cutmix-on-table", "unknown-option", "explain-alpha", "explain-classes"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_one_line_exit_2_nothing_written(capsys, tmp_path, case):
    args, message = bad_inputs(tmp_path)[case]
    out_dir = tmp_path / "out"
    if args[0] == "compare" and "--out" not in args:
        args = [*args, "--out", out_dir]
    status, _, err = run(capsys, *args)
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("labelsmooth: error: ")
    assert message in err
    assert "Traceback" not in err
    assert not out_dir.exists()


def test_bad_input_in_a_subprocess_has_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "labelsmooth", "compare", "--dataset", str(tmp_path / "nope"), "--out",
         str(tmp_path / "out")],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads every file")
def test_unreadable_path(capsys, tmp_path):
    folder = make_image_folder(tmp_path / "locked", per_class=2)
    folder.chmod(0)
    try:
        status, _, err = run(capsys, "compare", "--dataset", folder, "--out", tmp_path / "out")
    finally:
        folder.chmod(0o755)
    assert status == 2 and "a path this user can read" in err


def test_join_variadic():
    assert _join_variadic(["compare", "--alphas", "0", "0.1", "--seeds", "2"]) == [
        "compare", "--alphas", "0,0.1", "--seeds", "2"]
    assert _join_variadic(["--alphas", "0,0.2"]) == ["--alphas", "0,0.2"]
