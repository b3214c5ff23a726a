"""``compare_runs``: the analysis of saved run records written by any trainer.

Oracles: the metrics recomputed here in numpy from the very arrays of the
records, a known temperature, and a paired bootstrap written independently
(its own generator and resampling code).
"""

from __future__ import annotations

import itertools
import json
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

import compare_helpers as helpers
from labelsmooth.cli import main
from labelsmooth.experiments import compare, compare_runs, read_run, save_run
from labelsmooth.experiments._analysis import NO_INTERVAL, REPLICATES

N, C = 400, 5


def calibrated(n: int, seed: int, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose softmax draws the labels (so T = 1 is right for them), multiplied by ``scale``."""
    rng = np.random.default_rng(seed)
    logits = 2.0 * rng.standard_normal((n, C))
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    labels = np.array([rng.choice(C, p=p) for p in probs])
    return (scale * logits).astype(np.float32), labels


def shifted(logits: np.ndarray, labels: np.ndarray, boost: float, seed: int) -> np.ndarray:
    """The logits with the true class raised by ``boost`` on a random half of the rows: another 'model'."""
    rng = np.random.default_rng(seed)
    out = logits.copy()
    rows = rng.random(len(labels)) < 0.5
    out[rows, labels[rows]] += boost
    return out


def write_numpy(path, logits, labels, *, alpha, seed, ids=None, val=None, **meta):
    """A record written with numpy alone, as a user's cluster job would."""
    arrays = {"test_logits": logits, "test_labels": labels}
    if ids is not None:
        arrays["test_ids"] = ids
    if val is not None:
        arrays["val_logits"], arrays["val_labels"] = val
    np.savez(path, **arrays, meta=json.dumps({"alpha": alpha, "seed": seed, **meta}))
    return path


@pytest.fixture
def two_runs(tmp_path):
    """Alpha 0 and 0.1, one seed each, with validation splits."""
    test_logits, labels = calibrated(N, seed=0)
    val = calibrated(200, seed=1)
    base = write_numpy(tmp_path / "a0.npz", test_logits, labels, alpha=0.0, seed=0, val=val)
    other = write_numpy(tmp_path / "a1.npz", shifted(test_logits, labels, 1.0, seed=2), labels, alpha=0.1,
                        seed=0, val=(shifted(*val, 1.0, seed=3), val[1]))
    return base, other


def numpy_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    z = logits.astype(np.float64)
    z = z - z.max(1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(1, keepdims=True))
    probs = np.exp(log_probs)
    onehot = np.eye(C)[labels]
    confidence, prediction = probs.max(1), probs.argmax(1)
    correct = prediction == labels
    edges = np.linspace(0, 1, 16, dtype=np.float32).astype(np.float64)
    ece = 0.0
    for lo, hi in itertools.pairwise(edges):
        inside = (confidence > lo) & (confidence <= hi)
        if inside.any():
            ece += inside.sum() / len(labels) * abs(correct[inside].mean() - confidence[inside].mean())
    return {"accuracy": correct.mean(), "nll": -log_probs[np.arange(len(labels)), labels].mean(),
            "brier": ((probs - onehot) ** 2).sum(1).mean(), "ece": ece}


def test_metrics_equal_numpy_on_the_records_arrays(two_runs):
    result = compare_runs(list(two_runs))
    for path, run in zip(sorted(two_runs), sorted(result.runs, key=lambda r: r.alpha), strict=True):
        stored = np.load(path)
        expected = numpy_metrics(stored["test_logits"], stored["test_labels"])
        for name, value in expected.items():
            assert run.metrics[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name


@pytest.mark.parametrize("temperature", [0.5, 3.0])
def test_the_temperature_of_logits_scaled_by_a_known_factor_is_recovered(tmp_path, temperature):
    for alpha, seed in ((0.0, 10), (0.1, 11)):  # one test split; each run its own validation draw
        test = calibrated(4000, seed=0, scale=temperature)
        val = calibrated(8000, seed=seed, scale=temperature)
        write_numpy(tmp_path / f"{alpha}.npz", *test, alpha=alpha, seed=0, val=val)
    result = compare_runs(tmp_path)
    for run in result.runs:
        assert run.temperature_ok and run.temperature == pytest.approx(temperature, rel=0.05)
        # After scaling, the NLL is that of the calibrated logits themselves.
        assert run.scaled["nll"] == pytest.approx(numpy_metrics(*calibrated(4000, seed=0))["nll"], rel=0.01)


def independent_bootstrap(a: np.ndarray, b: np.ndarray, replicates: int, seed: int) -> tuple[float, float]:
    """Percentile interval of mean(a - b) over resampled examples, by plain indexing."""
    rng = np.random.Generator(np.random.MT19937(seed))
    means = np.array([(a[idx] - b[idx]).mean() for idx in rng.integers(0, len(a), (replicates, len(a)))])
    return tuple(np.percentile(means, [2.5, 97.5]))


def per_example(path) -> dict[str, np.ndarray]:
    stored = np.load(path)
    z = stored["test_logits"].astype(np.float64)
    labels = stored["test_labels"]
    z = z - z.max(1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(1, keepdims=True))
    return {"accuracy": (log_probs.argmax(1) == labels).astype(float),
            "nll": -log_probs[np.arange(len(labels)), labels]}


def test_one_seed_gets_a_paired_bootstrap_over_examples_that_matches_an_independent_one(two_runs):
    result = compare_runs(list(two_runs))
    base, other = per_example(two_runs[0]), per_example(two_runs[1])
    for name in ("accuracy", "nll"):
        c = next(c for c in result.comparisons if c["metric"] == name and c["scaling"] == "none")
        assert c["interval"] == "examples" and c["n_pairs"] == 1
        low, high = independent_bootstrap(other[name], base[name], REPLICATES, seed=123)
        width = high - low
        assert c["difference_interval"][0] == pytest.approx(low, abs=0.1 * width)
        assert c["difference_interval"][1] == pytest.approx(high, abs=0.1 * width)
        assert c["difference_mean"] == pytest.approx((other[name] - base[name]).mean(), rel=1e-9)
        assert c["inside_noise"] == (c["difference_interval"][0] <= 0 <= c["difference_interval"][1])
    # Metrics without a per-example form have no interval, so no noise verdict.
    aurc = next(c for c in result.comparisons if c["metric"] == "aurc" and c["scaling"] == "none")
    assert aurc["interval"] is None and aurc["inside_noise"] is None and aurc["verdict"] == NO_INTERVAL


def test_without_intervals_no_comparison_claims_to_be_inside_the_noise(two_runs, tmp_path):
    result = compare_runs(list(two_runs), ci=False, out=tmp_path / "out")
    assert {c["verdict"] for c in result.comparisons} == {NO_INTERVAL}
    assert all(c["inside_noise"] is None for c in result.comparisons)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Inside the noise" not in report and "intervals were turned off" in report


def test_row_order_does_not_change_the_comparison(tmp_path, two_runs):
    reference = compare_runs(list(two_runs))
    stored = np.load(two_runs[1])
    order = np.random.default_rng(5).permutation(N)
    write_numpy(tmp_path / "shuffled.npz", stored["test_logits"][order], stored["test_labels"][order],
                alpha=0.1, seed=0, ids=order, val=(stored["val_logits"], stored["val_labels"]))
    shuffled = compare_runs([two_runs[0], tmp_path / "shuffled.npz"])
    assert shuffled.summary == reference.summary
    assert shuffled.comparisons == reference.comparisons


def test_pt_records_and_save_run_equal_numpy_records(tmp_path, two_runs):
    for path in two_runs:
        stored = np.load(path)
        meta = json.loads(str(stored["meta"]))
        torch.save({"test_logits": torch.from_numpy(stored["test_logits"]),
                    "test_labels": torch.from_numpy(stored["test_labels"]),
                    "val_logits": torch.from_numpy(stored["val_logits"]),
                    "val_labels": torch.from_numpy(stored["val_labels"]), "meta": json.dumps(meta)},
                   tmp_path / f"{path.stem}.pt")
        save_run(tmp_path / "saved" / f"{path.stem}.npz", alpha=meta["alpha"], seed=meta["seed"],
                 test=(torch.from_numpy(stored["test_logits"]).double(),
                       torch.from_numpy(stored["test_labels"])),
                 val=(stored["val_logits"], stored["val_labels"]))
    reference = compare_runs(list(two_runs))
    for runs in (sorted(tmp_path.glob("*.pt")), tmp_path / "saved"):
        other = compare_runs(runs)
        assert other.summary == reference.summary and other.comparisons == reference.comparisons


def test_compare_writes_records_that_reproduce_its_summary(tmp_path):
    out = tmp_path / "out"
    result = compare(**{**helpers.options(), "seeds": 2}, out=out)
    records = sorted((out / "predictions").iterdir())
    assert [p.name for p in records] == ["alpha0.1_seed0.npz", "alpha0.1_seed1.npz", "alpha0_seed0.npz",
                                         "alpha0_seed1.npz"]
    again = compare_runs(out / "predictions", out=tmp_path / "again")
    assert again.summary == result.summary
    assert again.comparisons == result.comparisons
    report = (tmp_path / "again" / "report.md").read_text()
    assert all(f"sha256 `{read_run(p).sha256}`" in report for p in records)
    assert "No penultimate-layer picture: run records hold predictions" in report


def cli(capsys, *args):
    status = main(["compare", *map(str, args)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_different_test_ids_are_refused_naming_the_first(tmp_path, two_runs, capsys):
    stored = np.load(two_runs[1])
    ids = np.arange(N)
    ids[7] = 10_000
    bad = write_numpy(tmp_path / "ids.npz", stored["test_logits"], stored["test_labels"], alpha=0.2, seed=0,
                      ids=ids)
    with pytest.raises(ValueError, match=r"ids.npz: test_ids: expected the same test ids as every run "
                                         r"\(missing here: 7\)"):
        compare_runs([*two_runs, bad])
    status, out, err = cli(capsys, "--runs", *two_runs, bad, "--out", tmp_path / "cli")
    assert status == 2 and out == "" and err.count("\n") == 1 and "missing here: 7" in err
    assert not (tmp_path / "cli").exists()


def test_different_labels_are_refused_naming_the_id(tmp_path, two_runs):
    stored = np.load(two_runs[1])
    labels = stored["test_labels"].copy()
    labels[3] = (labels[3] + 1) % C
    bad = write_numpy(tmp_path / "labels.npz", stored["test_logits"], labels, alpha=0.2, seed=0)
    with pytest.raises(ValueError, match=r"labels.npz: test_labels: expected the same labels as .*a0.npz, "
                                         "got 'a different label for id 3'"):
        compare_runs([*two_runs, bad])


def test_repeated_ids_are_dropped_with_a_warning_when_their_labels_agree(tmp_path, two_runs):
    stored = np.load(two_runs[1])
    padded = np.concatenate([np.arange(N), [0, 1]])  # a DDP sampler's padding repeats the first rows
    logits, labels = stored["test_logits"][padded], stored["test_labels"][padded]
    path = write_numpy(tmp_path / "padded.npz", logits, labels, alpha=0.1, seed=0, ids=padded,
                       val=(stored["val_logits"], stored["val_labels"]))
    with pytest.warns(UserWarning, match="padded.npz: test_ids: 2 repeated ids dropped"):
        result = compare_runs([two_runs[0], path])
    reference = compare_runs(list(two_runs))
    assert result.comparisons == reference.comparisons
    labels = labels.copy()
    labels[-1] = (labels[1] + 1) % C
    write_numpy(tmp_path / "padded.npz", logits, labels, alpha=0.1, seed=0, ids=padded)
    with pytest.raises(ValueError, match="expected repeated ids with the same labels, got 'id 1 with two"):
        compare_runs([two_runs[0], path])


@pytest.mark.parametrize(("change", "message"), [
    ("nan", r"bad.npz: test_logits: expected finite logits, got 'a non-finite value in row 4'"),
    ("label", r"bad.npz: test_labels: expected labels in \[0, 5\) .*got 9"),
    ("classes", r"bad.npz: test_logits: expected 5 classes .*got 6"),
    ("duplicate", r"bad.npz: meta: expected one record per \(alpha, seed\)"),
    ("settings", r"bad.npz: meta.settings: .*setting 'lr': None in .*a0.npz, 0.1 here"),
    ("meta", r"bad.npz: meta.seed: expected a value \(alpha and seed are required\)"),
    ("pickle", r"bad.npz: expected an .npz of plain arrays \(read without pickle\)"),
])
def test_bad_records_are_refused_naming_the_file_and_the_key(tmp_path, two_runs, change, message, capsys):
    stored = np.load(two_runs[1])
    logits, labels = stored["test_logits"].copy(), stored["test_labels"].copy()
    meta = {"alpha": 0.2, "seed": 0}
    if change == "nan":
        logits[4, 1] = np.nan
    elif change == "label":
        labels[2] = 9
    elif change == "classes":
        logits = np.concatenate([logits, logits[:, :1]], axis=1)
    elif change == "duplicate":
        meta["alpha"] = 0.1
    elif change == "settings":
        meta["settings"] = {"lr": 0.1}
    elif change == "meta":
        del meta["seed"]
    path = tmp_path / "bad.npz"
    if change == "pickle":
        np.savez(path, test_logits=logits, test_labels=labels, meta=np.array([meta], dtype=object))
    else:
        np.savez(path, test_logits=logits, test_labels=labels, meta=json.dumps(meta))
    with pytest.raises((ValueError, TypeError), match=message):
        compare_runs([*two_runs, path])
    status, out, err = cli(capsys, "--runs", *two_runs, path, "--out", tmp_path / "cli")
    assert status == 2 and out == "" and err.startswith("labelsmooth: error: ") and err.count("\n") == 1
    assert not (tmp_path / "cli").exists()


def test_an_out_folder_holding_files_is_refused_unless_overwrite(two_runs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    refused = r"out: expected an empty or new folder \(or overwrite=True\), got .*notes.txt"
    with pytest.raises(ValueError, match=refused):
        compare_runs(list(two_runs), ci=False, out=out)
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "keep me"
    compare_runs(list(two_runs), ci=False, out=out, overwrite=True)
    assert (out / "report.md").exists()


def test_one_alpha_is_refused(two_runs):
    with pytest.raises(ValueError, match=r"runs: expected records of at least two alphas, got \[0.0\]"):
        compare_runs([two_runs[0]])


def test_different_settings_are_allowed_on_request_and_said_in_the_report(tmp_path):
    test, val = calibrated(N, seed=0), calibrated(200, seed=1)
    write_numpy(tmp_path / "a.npz", *test, alpha=0.0, seed=0, val=val, settings={"lr": 0.1})
    write_numpy(tmp_path / "b.npz", *test, alpha=0.1, seed=0, val=val, settings={"lr": 0.2})
    with pytest.raises(ValueError, match=r"setting 'lr': 0.1 in .*a.npz, 0.2 here"):
        compare_runs(tmp_path)
    compare_runs(tmp_path, allow_different_settings=True, out=tmp_path / "out")
    assert "the runs' settings differ (allowed): setting 'lr'" in (tmp_path / "out" / "report.md").read_text()


def test_half_precision_logits_are_computed_in_float32_with_a_note(tmp_path):
    test = calibrated(N, seed=0)
    np.savez(tmp_path / "a.npz", test_logits=test[0].astype(np.float16), test_labels=test[1],
             meta=json.dumps({"alpha": 0.0, "seed": 0}))
    torch.save({"test_logits": torch.from_numpy(test[0]).bfloat16(), "test_labels": torch.from_numpy(test[1]),
                "meta": json.dumps({"alpha": 0.1, "seed": 0})}, tmp_path / "b.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = compare_runs(tmp_path)
    assert any("16-bit logits are computed in float32" in note for note in result.notes)
    assert any("no validation split in 2 of 2 records" in note for note in result.notes)
    assert all(run.temperature is None and run.scaled == {} for run in result.runs)


class Payload:
    """An arbitrary object: unpickling it could run code, so weights_only refuses it."""


def test_a_pt_file_with_arbitrary_objects_is_refused(tmp_path, two_runs):
    torch.save({"test_logits": torch.zeros(2, C), "test_labels": torch.zeros(2, dtype=torch.long),
                "meta": json.dumps({"alpha": 0.3, "seed": 0}), "extra": Payload()},
               tmp_path / "evil.pt")
    with pytest.raises(ValueError, match=r"evil.pt: expected a .pt file of tensors, strings and dicts"):
        compare_runs([*two_runs, tmp_path / "evil.pt"])


def test_save_run_checks_before_writing(tmp_path):
    logits, labels = calibrated(20, seed=0)
    with pytest.raises(ValueError, match=r"save_run: test_labels: expected labels in \[0, 5\)"):
        save_run(tmp_path / "r.npz", alpha=0.1, seed=0, test=(logits, labels + 5))
    with pytest.raises(ValueError, match=r"path: expected a file name ending in .npz or .pt"):
        save_run(tmp_path / "r.json", alpha=0.1, seed=0, test=(logits, labels))
    assert list(tmp_path.iterdir()) == []
    logits_t = torch.from_numpy(logits)
    save_run(tmp_path / "r.npz", alpha=0.1, seed=3, test=(logits_t, torch.from_numpy(labels)))
    record = read_run(tmp_path / "r.npz")
    assert record.alpha == 0.1 and record.seed == 3 and record.test.ids.tolist() == list(range(20))
    assert torch.equal(logits_t, torch.from_numpy(logits))  # the caller's tensor is untouched


def test_probability_outputs_and_undertrained_runs_are_warned_about(tmp_path):
    test, val = calibrated(N, seed=0), calibrated(200, seed=1)
    probs = np.exp(test[0]) / np.exp(test[0]).sum(1, keepdims=True)
    still_falling = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.0 / e} for e in (1, 2, 3)]
    for alpha in (0.0, 0.1):
        write_numpy(tmp_path / f"{alpha}.npz", probs, test[1], alpha=alpha, seed=0, val=val,
                    history=still_falling)
    result = compare_runs(tmp_path)
    assert any("outputs are already probabilities" in w for w in result.warnings)
    assert any("validation loss of every run (2) was lowest at its last epoch" in w for w in result.warnings)
    turned = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": v} for e, v in ((1, 0.5), (2, 0.4), (3, 0.6))]
    write_numpy(tmp_path / "0.1.npz", *test, alpha=0.1, seed=0, val=val, history=turned)
    write_numpy(tmp_path / "0.0.npz", *test, alpha=0.0, seed=0, val=val)
    assert compare_runs(tmp_path).warnings == ()


def test_a_record_that_changes_between_the_checks_and_the_measurement_is_refused(two_runs):
    from labelsmooth.experiments._records import read_runs, reread

    records, _ = read_runs(list(two_runs))
    assert all(r.test.logits.strides == (0, 0) for r in records)  # checked, logits not held
    stored = np.load(two_runs[1])
    write_numpy(two_runs[1], stored["test_logits"] + 1, stored["test_labels"], alpha=0.1, seed=0)
    changed = next(r for r in records if r.source == str(two_runs[1]))
    with pytest.raises(ValueError, match=r"a1.npz: expected the file that was checked .*changed since"):
        reread(changed)
    assert reread(next(r for r in records if r is not changed)).test.logits.strides != (0, 0)
