"""OnlineLabelSmoothing: a tiny example by hand, eval batches, save/restore, composition, gloo."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F

import labelsmooth as ls
from gloo_helpers import spawn
from labelsmooth import Event, State
from labelsmooth.schedules import Linear

# Five samples, three classes; the logits are log-probabilities, so softmax gives these rows back.
PROBS = torch.tensor([
    [0.7, 0.2, 0.1],  # label 0, predicted 0: counts
    [0.5, 0.1, 0.4],  # label 0, predicted 0: counts
    [0.6, 0.3, 0.1],  # label 1, predicted 0: wrong, left out
    [0.1, 0.2, 0.7],  # label 2, predicted 2: counts
    [0.1, 0.8, 0.1],  # ignored (-100): left out
], dtype=torch.float64)
LABELS = torch.tensor([0, 0, 1, 2, -100])
#: S after one epoch, by hand: class 0 averages rows 0 and 1, class 1 had no correct sample (keeps
#: its one-hot row), class 2 is row 3.
S_AFTER_ONE_EPOCH = torch.tensor([[0.6, 0.15, 0.25], [0.0, 1.0, 0.0], [0.1, 0.2, 0.7]], dtype=torch.float64)


def _step(engine: ls.Engine, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """One training step's loss events; returns the target the loss saw."""
    engine.state.batch = (None, labels)
    engine.state.outputs = logits
    with engine.loss_events() as state:
        seen = state.batch[1]
    assert engine.state.batch[1] is labels  # the original object is back
    return seen


def _epoch(engine: ls.Engine, logits: torch.Tensor, labels: torch.Tensor, batch_size: int = 2) -> None:
    for start in range(0, len(labels), batch_size):
        _step(engine, logits[start : start + batch_size], labels[start : start + batch_size])
    engine.run_event(Event.EPOCH_END)


def test_tiny_example_by_hand():
    ols = ls.OnlineLabelSmoothing(0.5)
    engine = ls.Engine(State(), [ols])
    _epoch(engine, PROBS.log().float(), LABELS)
    assert ols.epochs == 1
    torch.testing.assert_close(ols.matrix, S_AFTER_ONE_EPOCH, atol=1e-6, rtol=0)
    # The next epoch's targets: 0.5 * onehot(y) + 0.5 * S[y]; the ignored row is all zeros.
    seen = _step(engine, torch.zeros(5, 3), LABELS)
    expected = torch.tensor(
        [[0.8, 0.075, 0.125], [0.8, 0.075, 0.125], [0.0, 1.0, 0.0], [0.05, 0.1, 0.85], [0.0, 0.0, 0.0]]
    )
    torch.testing.assert_close(seen, expected)


@pytest.mark.parametrize(
    "init, row",
    [("onehot", [1.0, 0.0, 0.0]), ("uniform", [0.8 + 0.2 / 3, 0.2 / 3, 0.2 / 3])],
    ids=["onehot", "uniform"],
)
def test_first_epoch_target(init, row):
    engine = ls.Engine(State(), [ls.OnlineLabelSmoothing(0.2, init=init)])
    seen = _step(engine, torch.zeros(1, 3), torch.tensor([0]))
    torch.testing.assert_close(seen, torch.tensor([row]))


def test_loss_equals_paper_hard_plus_soft():
    """CE on the target equals alpha_p * CE_hard + (1 - alpha_p) * CE(S[y]) with alpha_p = 1 - alpha."""
    ols = ls.OnlineLabelSmoothing(0.3)
    engine = ls.Engine(State(), [ols])
    _epoch(engine, PROBS.log().float(), LABELS)
    logits = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 2, 1, 0])
    engine.state.batch, engine.state.outputs = (None, labels), logits
    with engine.loss_events() as state:
        loss = ls.cross_entropy(logits, state.batch[1])
    soft = S_AFTER_ONE_EPOCH.float()[labels]
    reference = 0.7 * F.cross_entropy(logits, labels) + 0.3 * F.cross_entropy(logits, soft)
    torch.testing.assert_close(loss, reference)


def test_rows_without_correct_samples_keep_their_previous_row():
    ols = ls.OnlineLabelSmoothing(0.5)
    engine = ls.Engine(State(), [ols])
    _epoch(engine, PROBS.log().float(), LABELS)
    # Epoch 2: only class 2 has a correct sample, with another distribution.
    _epoch(engine, torch.tensor([[0.2, 0.2, 0.6]]).log(), torch.tensor([2]))
    expected = S_AFTER_ONE_EPOCH.clone()
    expected[2] = torch.tensor([0.2, 0.2, 0.6], dtype=torch.float64)
    torch.testing.assert_close(ols.matrix, expected, atol=1e-6, rtol=0)
    assert ols.epochs == 2


def test_segmentation_equals_flattened_pixels():
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 4, 3, 5, generator=gen) * 3
    labels = torch.randint(0, 4, (2, 3, 5), generator=gen)
    labels[0, 0] = -100
    image = ls.OnlineLabelSmoothing(0.5, num_classes=4)
    flat = ls.OnlineLabelSmoothing(0.5, num_classes=4, dim=-1)
    _epoch(ls.Engine(State(), [image]), logits, labels)
    flat_logits = logits.movedim(1, -1).reshape(-1, 4)
    _epoch(ls.Engine(State(), [flat]), flat_logits, labels.reshape(-1), batch_size=60)
    torch.testing.assert_close(image.matrix, flat.matrix)
    assert not torch.equal(image.matrix, torch.eye(4, dtype=torch.float64))
    seen = _step(ls.Engine(State(), [image]), logits, labels)
    assert seen.shape == logits.shape
    torch.testing.assert_close(seen[0, :, 0], torch.zeros(4, 5))  # ignored pixels: zero rows
    torch.testing.assert_close(seen.sum(1)[1], torch.ones(3, 5))


def test_eval_batches_change_nothing():
    """No eval or predict event matches, and a loss computed with the model in eval mode collects nothing."""
    ols = ls.OnlineLabelSmoothing(0.5)
    model = torch.nn.Linear(1, 1)
    engine = ls.Engine(State(model=model), [ols])
    _epoch(engine, PROBS.log().float(), LABELS)
    for event in Event:
        if event.is_eval or event.is_predict:
            assert not ols.match(event, engine.state), event
    model.eval()
    _step(engine, torch.tensor([[0.0, 5.0, 0.0]]), torch.tensor([1]))  # would give class 1 a row
    model.train()
    engine.run_event(Event.EPOCH_END)
    torch.testing.assert_close(ols.matrix, S_AFTER_ONE_EPOCH, atol=1e-6, rtol=0)


def test_save_restore_gives_identical_behaviour(tmp_path):
    """Stopping mid-epoch and resuming from state_dict gives the uninterrupted run's targets and S."""
    gen = torch.Generator().manual_seed(1)
    batches = [
        (torch.randn(6, 4, generator=gen) * 2, torch.randint(0, 4, (6,), generator=gen)) for _ in range(6)
    ]

    def run(ols: ls.OnlineLabelSmoothing, part: slice) -> list[torch.Tensor]:
        engine = ls.Engine(State(), [ols])
        seen = []
        for i in range(6)[part]:
            seen.append(_step(engine, *batches[i]))
            if i % 3 == 2:
                engine.run_event(Event.EPOCH_END)
        return seen

    whole = ls.OnlineLabelSmoothing(Linear(0.5, 0.2, duration=4))
    expected = run(whole, slice(None))
    first = ls.OnlineLabelSmoothing(Linear(0.5, 0.2, duration=4))
    run(first, slice(0, 4))  # one epoch and one batch of the next
    torch.save(first.state_dict(), tmp_path / "ols.pt")
    resumed = ls.OnlineLabelSmoothing(Linear(0.5, 0.2, duration=4))
    resumed.load_state_dict(torch.load(tmp_path / "ols.pt"))
    assert resumed.epochs == 1
    seen = run(resumed, slice(4, None))
    for got, want in zip(seen, expected[4:], strict=True):
        torch.testing.assert_close(got, want, atol=0, rtol=0)
    torch.testing.assert_close(resumed.matrix, whole.matrix, atol=0, rtol=0)
    assert resumed.epochs == whole.epochs == 2
    assert not torch.equal(whole.matrix, torch.eye(4, dtype=torch.float64))


def test_state_dict_before_any_batch_and_pickle():
    ols = ls.OnlineLabelSmoothing(0.4, num_classes=3, init="uniform")
    copy = ls.OnlineLabelSmoothing(0.4)
    copy.load_state_dict(pickle.loads(pickle.dumps(ols.state_dict())))
    torch.testing.assert_close(copy.matrix, torch.full((3, 3), 1 / 3, dtype=torch.float64))
    assert repr(pickle.loads(pickle.dumps(ols))) == repr(ols)
    assert "OnlineLabelSmoothing(alpha=0.4, target_key=1, num_classes=3, init='uniform'" in repr(ols)
    assert ls.OnlineLabelSmoothing().state_dict()["matrix"] is None


def test_load_state_dict_refuses_other_shapes():
    state = ls.OnlineLabelSmoothing(num_classes=3).state_dict()
    with pytest.raises(ValueError, match="state\\['matrix'\\]"):
        ls.OnlineLabelSmoothing(num_classes=4).load_state_dict(state)
    state["counts"] = torch.zeros(2)
    with pytest.raises(ValueError, match="state\\['counts'\\]: expected shape"):
        ls.OnlineLabelSmoothing().load_state_dict(state)


@pytest.mark.parametrize(
    "others",
    [
        [ls.MixUp()],
        [ls.CutMix()],
        [ls.LabelSmoothing(0.1)],
        [ls.OnlineLabelSmoothing()],
    ],
    ids=["mixup", "cutmix", "label-smoothing", "two-ols"],
)
@pytest.mark.parametrize("first", [True, False], ids=["ols-first", "ols-last"])
def test_composition_on_the_same_targets_is_refused_at_start_up(others, first):
    algorithms = [ls.OnlineLabelSmoothing(), *others] if first else [*others, ls.OnlineLabelSmoothing()]
    with pytest.raises(ValueError, match="OnlineLabelSmoothing as the only algorithm"):
        ls.Engine(State(), algorithms)


def test_other_target_keys_compose():
    """OLS on "y" and LabelSmoothing on "aux" start up together, and each changes only its own targets."""
    y, aux = torch.tensor([0, 2]), torch.tensor([1, 1])
    logits = torch.zeros(2, 3)
    algorithms = [ls.OnlineLabelSmoothing(0.5, target_key="y"), ls.LabelSmoothing(0.3, target_key="aux")]
    engine = ls.Engine(State(batch={"y": y, "aux": aux}, outputs=logits), algorithms)
    with engine.loss_events() as state:
        seen_y, seen_aux = state.batch["y"], state.batch["aux"]
    # OLS's first epoch trains on one-hot rows (init="onehot"); LabelSmoothing gives 0.7 + 0.1 and 0.1.
    torch.testing.assert_close(seen_y, F.one_hot(y, 3).float())
    torch.testing.assert_close(seen_aux, torch.tensor([[0.1, 0.8, 0.1], [0.1, 0.8, 0.1]]))
    assert engine.state.batch["y"] is y
    assert engine.state.batch["aux"] is aux


def test_refuses_dense_targets_and_wrong_class_count():
    engine = ls.Engine(State(), [ls.OnlineLabelSmoothing(num_classes=3)])
    with pytest.raises(TypeError, match="targets: expected class indices"):
        _step(engine, torch.zeros(2, 3), torch.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match="logits: expected 3 classes"):
        _step(engine, torch.zeros(2, 4), torch.tensor([0, 1]))


@pytest.mark.parametrize(
    "kwargs, error",
    [({"alpha": 1.5}, ValueError), ({"init": "zeros"}, ValueError), ({"num_classes": 0}, ValueError),
     ({"num_classes": 2.0}, TypeError), ({"dim": "1"}, TypeError)],
    ids=["alpha", "init", "num-classes-zero", "num-classes-float", "dim"],
)
def test_bad_arguments(kwargs, error):
    with pytest.raises(error, match=f"^{next(iter(kwargs))}: expected"):
        ls.OnlineLabelSmoothing(**kwargs)


def test_restores_targets_when_the_loss_raises():
    engine = ls.Engine(State(batch=(None, LABELS), outputs=torch.zeros(5, 3)), [ls.OnlineLabelSmoothing()])
    with pytest.raises(RuntimeError), engine.loss_events():
        raise RuntimeError("loss failed")
    assert engine.state.batch[1] is LABELS


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_equals_cpu():
    """Statistics, S and targets follow the logits' device; a CPU checkpoint resumes on CUDA."""
    runs = {}
    for device in ("cpu", "cuda"):
        ols = ls.OnlineLabelSmoothing(0.5, num_classes=3)
        engine = ls.Engine(State(), [ols])
        _epoch(engine, PROBS.log().float().to(device), LABELS.to(device))
        runs[device] = (ols, _step(engine, torch.zeros(5, 3, device=device), LABELS.to(device)))
    assert runs["cuda"][0].matrix.device.type == "cuda"
    torch.testing.assert_close(runs["cuda"][0].matrix.cpu(), runs["cpu"][0].matrix)
    torch.testing.assert_close(runs["cuda"][1].cpu(), runs["cpu"][1])
    resumed = ls.OnlineLabelSmoothing(0.5)
    resumed.load_state_dict(runs["cpu"][0].state_dict())
    seen = _step(ls.Engine(State(), [resumed]), torch.zeros(5, 3, device="cuda"), LABELS.cuda())
    torch.testing.assert_close(seen.cpu(), runs["cpu"][1])


# ---------------------------------------------------------------- two processes on gloo

GLOO_CLASSES = 4


def _gloo_data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(14, GLOO_CLASSES, generator=gen) * 2
    labels = logits.argmax(-1)
    labels[::3] = torch.randint(0, GLOO_CLASSES, labels[::3].shape, generator=gen)  # some wrong
    labels[-1] = -100
    return logits, labels


def _gloo_job(rank: int, world_size: int) -> dict:
    """One rank's epoch: rank 0 takes the first 10 samples (5 batches), rank 1 the last 4 (2 batches)."""
    logits, labels = _gloo_data()
    ols = ls.OnlineLabelSmoothing(0.5, num_classes=GLOO_CLASSES)
    part = slice(0, 10) if rank == 0 else slice(10, None)
    _epoch(ls.Engine(State(), [ols]), logits[part], labels[part])
    return ols.state_dict()


def test_two_gloo_processes_equal_one_process_on_the_combined_data(tmp_path):
    states = spawn(_gloo_job, 2, tmp_path)
    assert not isinstance(states, str), states
    single = ls.OnlineLabelSmoothing(0.5, num_classes=GLOO_CLASSES)
    _epoch(ls.Engine(State(), [single]), *_gloo_data())
    assert not torch.equal(single.matrix, torch.eye(GLOO_CLASSES, dtype=torch.float64))
    for state in states:
        torch.testing.assert_close(state["matrix"], single.matrix, atol=1e-12, rtol=0)
        assert state["epochs"] == 1
        assert not state["counts"].any()


def test_online_targets_of_a_mixture_is_the_mixture_of_rows():
    """Mixed SoftTargets give (1 - lam) q(y) + lam q(y[perm]), with q = 0.6 e_y + 0.4 S[y]."""
    from labelsmooth.algorithms.online_label_smoothing import online_targets

    matrix = S_AFTER_ONE_EPOCH
    y, perm, lam = torch.tensor([0, 2, 1, -100]), torch.tensor([1, 0, 3, 2]), 0.25
    mixed = ls.SoftTargets.from_index(y, num_classes=3).mix(perm, lam)
    got = online_targets(mixed, matrix, 0.4, dtype=torch.float64, dim=1)

    def q(label: int) -> torch.Tensor:
        if label < 0:
            return torch.zeros(3, dtype=torch.float64)
        return 0.6 * torch.eye(3, dtype=torch.float64)[label] + 0.4 * matrix[label]

    expected = torch.stack([(1 - lam) * q(int(y[i])) + lam * q(int(y[perm[i]])) for i in range(4)])
    torch.testing.assert_close(got, expected)
    with pytest.raises(ValueError, match="targets: expected unsmoothed targets"):
        online_targets(mixed.smooth(0.1), matrix, 0.4, dtype=torch.float64, dim=1)
