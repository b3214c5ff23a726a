"""The ``labelsmooth`` command: help, compare end to end, explain, and one-line errors on bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("click")
import compare_helpers as helpers
from compare_helpers import make_image_folder, make_table
from labelsmooth.cli import _join_variadic, main

pytestmark = pytest.mark.usefixtures("quick_figures")
HELPERS = Path(helpers.__file__).parent
#: --model/--data for compare_helpers' blobs and net, with settings that learn them.
USER = ["--model", "compare_helpers:make_model", "--epochs", "3", "--batch-size", "16", "--lr", "0.01"]
BLOBS = [*USER, "--data", "compare_helpers:loader", "--seeds", "2"]


def run(capsys, *args):
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def expected_status(out: Path) -> int:
    """0, or 3 when every run of some alpha did not learn (from the written metrics.json)."""
    runs = json.loads((out / "metrics.json").read_text())["runs"]
    alphas = {r["alpha"] for r in runs}
    return 3 if any(not any(r["learned"] for r in runs if r["alpha"] == a) for a in alphas) else 0


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
    assert "| alpha | seeds | accuracy (%) | NLL | ECE |" in out
    document = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert [row["alpha"] for row in document["summary"]] == [0.0, 0.05, 0.1]
    assert len(document["runs"]) == 6


def test_compare_label_noise_and_others_convention(capsys, tmp_path):
    table = make_table(tmp_path / "t.csv")
    status, _, _ = run(capsys, "compare", "--dataset", table, "--label-column", "species", "--epochs", "1",
                       "--seeds", "2", "--label-noise", "0.2", "--convention", "others",
                       "--out", tmp_path / "o")
    assert status == expected_status(tmp_path / "o")
    config = json.loads((tmp_path / "o" / "metrics.json").read_text())["config"]
    assert config["label_noise"] == 0.2 and config["convention"] == "others"


def test_compare_image_folder(capsys, tmp_path):
    folder = make_image_folder(tmp_path / "pets")
    status, out, _ = run(capsys, "compare", "--dataset", folder, "--epochs", "1", "--seeds", "2",
                         "--out", tmp_path / "o")
    assert status == expected_status(tmp_path / "o") and "ECE" in out
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


def test_explain_negative_alpha(capsys):
    status, out, _ = run(capsys, "explain", "--alpha", "-0.2", "--classes", "1000", "--allow-negative")
    assert status == 0
    # uniform: 1 + 0.2 - 0.2/1000 on the true class, -0.2/1000 on each other; no floor.
    as_given = next(line for line in out.splitlines() if "as given" in line).split()
    assert as_given[:6] == ["uniform", "-0.2", "1.1998", "-0.0002", "-inf", "nats"]
    assert "loss floor: minus infinity" in out and "warm-up with plain cross-entropy" in out
    assert "validation data, never on the test set" in out


def bad_inputs(tmp_path: Path) -> dict[str, tuple[list[object], str]]:
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "a.png").write_bytes(b"")
    table = make_table(tmp_path / "t.csv")
    broken = make_image_folder(tmp_path / "broken", per_class=2)
    (broken / "dog" / "x.png").write_text("not an image")
    (tmp_path / "file").write_text("x")
    empty = tmp_path / "empty_classes"
    for name in ("a", "b"):
        (empty / name).mkdir(parents=True)
        (empty / name / "notes.txt").write_text("no image")
    data = ["--data", "compare_helpers:loader"]
    return {
        "missing-path": (["compare", "--dataset", tmp_path / "nope"], "dataset: expected"),
        "no-class-subfolders": (["compare", "--dataset", flat], "at least two class subfolders"),
        "unreadable-image": (["compare", "--dataset", broken], "readable image files"),
        "no-label-column": (["compare", "--dataset", table], "label_column: expected a column"),
        "alpha-above-one": (["compare", "--alphas", "0", "1.5"], "alphas: expected a real number in [0, 1]"),
        "alpha-negative": (["compare", "--alphas", "-0.1"], "alphas: expected a real number in [0, 1]"),
        "alpha-not-a-number": (["compare", "--alphas", "abc"], "alphas: expected numbers"),
        "one-seed-with-ci": (["compare", "--seeds", "1"], "seeds: expected at least 2 seeds for a confidence "
                             "interval (or --no-ci), got 1"),
        "subfolders-without-images": (["compare", "--dataset", empty],
                                      "subfolders holding images (.png, .jpg, .jpeg, ...), got"),
        "device-mps": (["compare", "--device", "mps"], "device: expected an available device (no mps device"),
        "device-xpu": (["compare", "--device", "xpu"], "device: expected an available device (no xpu device"),
        "device-meta": (["compare", "--device", "meta"], "device: expected a device that holds data"),
        "model-does-not-import": (["compare", "--model", "no_such_module:f", *data],
                                  "model: expected an importable 'pkg.module:name', got \"no_such_module:f "
                                  "(ModuleNotFoundError"),
        "model-name-missing": (["compare", "--model", "compare_helpers:nope", *data],
                               "model: expected a name defined in compare_helpers"),
        "model-returns-int": (["compare", "--model", "compare_helpers:not_a_factory", *data],
                              "model: expected a callable(num_classes) returning a torch.nn.Module"),
        "model-output-shape": (["compare", "--model", "compare_helpers:too_wide", *data],
                               "model: expected logits of shape (2, 3) for labels of shape (2,) (3 classes), "
                               "got (2, 5)"),
        "model-rejects-input": (["compare", "--model", "compare_helpers:make_segnet", *data],
                                "model: expected a model that takes a batch of inputs of shape (2, 6), "
                                "got 'RuntimeError: Expected 3D"),
        "data-returns-one": (["compare", "--data", "compare_helpers:not_a_loader"],
                             "data: expected a loader returning (train, test) or (train, val, test)"),
        "data-and-dataset": (["compare", *data, "--dataset", "digits"], "data: expected either --data or"),
        "resume-and-overwrite": (["compare", "--resume", "--overwrite"],
                                 "--resume: expected either --resume"),
        "out-is-a-file": (["compare", "--out", tmp_path / "file"], "out: expected a directory"),
        "bad-device": (["compare", "--device", "tpu9"], "device: expected"),
        "negative-mixup": (["compare", "--mixup", "-0.5"], "mixup: expected a finite real number >= 0"),
        "cutmix-on-table": (["compare", "--dataset", table, "--label-column", "species", "--cutmix", "1"],
                            "cutmix: expected image data"),
        "unknown-option": (["compare", "--bogus"], "No such option"),
        "explain-alpha": (["explain", "--alpha", "2"], "alpha: expected a real number in [0, 1]"),
        "explain-classes": (["explain", "--classes", "1"], "classes: expected an int >= 2"),
        "explain-negative-without-flag": (["explain", "--alpha", "-0.2"],
                                          "alpha: expected a real number in [0, 1], or one in [-1, 0) with "
                                          "--allow-negative (negative label smoothing: Wei et al."),
        "explain-below-minus-one": (["explain", "--alpha", "-1.5", "--allow-negative"],
                                    "alpha: expected a real number in [-1, 1]"),
    }


CASES = ["missing-path", "no-class-subfolders", "unreadable-image", "no-label-column", "alpha-above-one",
         "alpha-negative", "alpha-not-a-number", "one-seed-with-ci", "out-is-a-file", "bad-device",
         "negative-mixup", "cutmix-on-table", "unknown-option", "explain-alpha", "explain-classes",
         "explain-negative-without-flag", "explain-below-minus-one",
         "subfolders-without-images", "device-mps", "device-xpu", "device-meta", "model-does-not-import",
         "model-name-missing", "model-returns-int", "model-output-shape", "model-rejects-input",
         "data-returns-one", "data-and-dataset",
         "resume-and-overwrite"]


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


def test_out_with_results_is_refused_in_one_line(capsys, tmp_path):
    out = tmp_path / "out"
    assert run(capsys, "compare", *BLOBS, "--out", out)[0] == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    status, _, err = run(capsys, "compare", *BLOBS, "--out", out)
    assert status == 2 and err.count("\n") == 1
    assert "out: expected an empty or new folder (--resume continues the runs in it, --overwrite" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    status, _, err = run(capsys, "compare", *BLOBS, "--epochs",
                         "4", "--resume", "--out", out)
    assert status == 2 and "out: expected the settings of the runs in" in err and "epochs 3 -> 4" in err
    assert run(capsys, "compare", *BLOBS, "--overwrite",
               "--out", out)[0] == 0


def test_progress_off_a_terminal_is_one_line_per_run(capsys, tmp_path):
    status, out, err = run(capsys, "compare", *USER, "--data", "compare_helpers:loader", "--seeds", "2",
                           "--out", tmp_path / "o")
    assert status == 0
    lines = [line for line in err.splitlines() if line.startswith("run ")]
    assert [line.split(":")[0] for line in lines] == ["run 1/4 alpha=0 seed=0", "run 2/4 alpha=0.1 seed=0",
                                                     "run 3/4 alpha=0 seed=1", "run 4/4 alpha=0.1 seed=1"]
    assert all("accuracy " in line and "% " in line.replace("%,", "% ") and "elapsed, ETA" in line
               for line in lines)
    header = "compare_helpers:loader: classification, 3 classes, 67 train / 23 validation / 60 test examples"
    assert err.splitlines()[0] == header
    assert "| alpha | seeds |" in out


def test_progress_on_a_terminal_is_a_bar(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    status, _, err = run(capsys, "compare", *BLOBS, "--out", tmp_path / "o")
    assert status == 0
    assert "60/60" in err and "step" in err  # 4 runs of 3 epochs of 5 steps (67 items, batches of 16)
    assert not any(line.startswith("run ") for line in err.splitlines())


def test_runs_that_did_not_learn_get_one_warning_line(capsys, tmp_path):
    status, out, err = run(capsys, "compare", *USER, "--model", "compare_helpers:Constant", "--data",
                           "compare_helpers:loader", "--seeds", "2", "--out", tmp_path / "o")
    assert status == 3  # no run of some alpha learned
    warnings = [line for line in err.splitlines() if line.startswith("labelsmooth: warning:")]
    assert len(warnings) == 1 and "4 of 4 runs did not learn" in warnings[0]
    assert "(did not learn)" in err and "**Not comparable**" in out


def test_dropped_columns_are_said(capsys, tmp_path):
    import pandas as pd

    path = tmp_path / "ids.csv"
    frame = pd.read_csv(make_table(tmp_path / "t.csv"))
    frame["user"] = [f"user{i}" for i in range(len(frame))]
    frame.to_csv(path, index=False)
    status, _, err = run(capsys, "compare", "--dataset", path, "--label-column", "species", "--seeds", "2",
                         "--epochs", "1", "--out", tmp_path / "o")
    assert status == 0
    assert "note: dropped text column 'user' (90 distinct values in 90 rows: an id or free text)" in err
    assert "dropped text column 'user'" in (tmp_path / "o" / "report.md").read_text()


@pytest.mark.parametrize(("args", "executor", "address"),
                         [(["--ray"], "ray", None), (["--ray", "auto"], "ray", "auto"),
                          (["--ray", "--seeds", "2"], "ray", None), ([], "local", None)],
                         ids=["local-cluster", "address", "flag-then-option", "no-ray"])
def test_ray_option(capsys, tmp_path, monkeypatch, args, executor, address):
    import labelsmooth.experiments

    seen = {}

    def fake(**kwargs):
        seen.update(kwargs)
        raise KeyboardInterrupt  # stop before any training; the command reports an interruption

    monkeypatch.setattr(labelsmooth.experiments, "compare", fake)
    status, _, err = run(capsys, "compare", "--data", "compare_helpers:loader", *args, "--out",
                         tmp_path / "o")
    assert status == 130 and "interrupted" in err
    assert (seen["executor"], seen["ray_address"]) == (executor, address)


@pytest.mark.parametrize("scale", ["shared", "own"])
def test_penultimate_scale_option_reaches_compare(capsys, tmp_path, monkeypatch, scale):
    import labelsmooth.experiments

    seen = {}

    def fake(**kwargs):
        seen.update(kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(labelsmooth.experiments, "compare", fake)
    args = [] if scale == "shared" else ["--penultimate-scale", scale]
    run(capsys, "compare", "--data", "compare_helpers:loader", *args, "--out", tmp_path / "o")
    assert seen["penultimate_scale"] == scale


def test_compare_writes_every_report_file_and_says_so(capsys, tmp_path):
    status, out, err = run(capsys, "compare", *BLOBS, "--out", tmp_path / "o")
    assert status == 0
    names = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert names == sorted(["runs.jsonl", "predictions", "metrics.json", "report.md",
                            *(f"{f}.{k}" for f in ("reliability", "metrics_vs_alpha", "curves", "penultimate")
                              for k in ("png", "svg"))])
    assert all(name in err.splitlines()[-1] for name in names)
    assert "| T | ECE after TS | NLL after TS |" in out


#: Runs a command with SIGINT at its default action, whatever this process inherited. A shell
#: that starts a job in the background sets SIGINT to "ignore", exec keeps that, and Python then
#: installs no KeyboardInterrupt handler; the CLI honours such an ignored SIGINT (nohup), so a test
#: that sends one starts its child through this wrapper, which resets it and execs the command
#: (``preexec_fn`` could do it too, but is unsafe in a process with threads, as torch's are).
_DEFAULT_SIGINT = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                   "os.execv(sys.argv[1], sys.argv[1:])")


@pytest.mark.slow  # a subprocess, interrupted partway
def test_ctrl_c_keeps_the_runs_writes_a_partial_report_and_resume_finishes(capsys, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "labelsmooth", "compare", *USER, "--data", "compare_helpers:slow_loader",
               "--seeds", "3", "--out", str(out)]
    process = subprocess.Popen([sys.executable, "-c", _DEFAULT_SIGINT, *command], cwd=HELPERS,
                               stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "COMPARE_HELPERS_PAUSE": "0.002"})
    seen = []
    for line in process.stderr:
        seen.append(line)
        if line.startswith("run 1/6"):
            break
    else:
        pytest.fail("the comparison ended before its first run: " + "".join(seen))
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=300)
    assert process.returncode == 130, rest
    assert "interrupted" in rest and "Traceback" not in rest
    report = (out / "report.md").read_text()
    assert "> **Partial report**: interrupted after" in report
    document = json.loads((out / "metrics.json").read_text())
    assert document["partial"] is True and 1 <= len(document["runs"]) < 6
    arguments = command[3:-1]  # after "python -m labelsmooth", without the --out folder
    status, _, err = run(capsys, *arguments, out, "--resume")
    assert status == 0, err
    assert run(capsys, *arguments, tmp_path / "whole")[0] == 0
    assert (out / "metrics.json").read_text() == (tmp_path / "whole" / "metrics.json").read_text()


def test_without_click_the_command_says_to_install_the_cli_extra():
    code = ("import sys; sys.modules['click'] = None  # as if not installed\n"
            "from labelsmooth.cli import main; sys.exit(main(['compare']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert result.stderr == 'labelsmooth compare needs the cli extra: pip install "labelsmooth[cli]"\n'


@pytest.mark.parametrize(("missing", "command"),
                         [("sklearn", "compare"), ("PIL", "compare"), ("click", "explain")],
                         ids=["sklearn", "pillow", "click-for-explain"])
def test_each_module_of_the_cli_extra_is_checked(capsys, monkeypatch, missing, command):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == missing else real(name, *a))
    status, _, err = run(capsys, command)
    assert status == 2
    assert err == f'labelsmooth {command} needs the cli extra: pip install "labelsmooth[cli]"\n'
