"""The Event / State / Engine protocol and the LabelSmoothing algorithm."""

from __future__ import annotations

import json
from collections import namedtuple
from types import SimpleNamespace

import pytest
import torch

import labelsmooth as ls
from labelsmooth import Event

COMPOSER_EVENTS = [
    "INIT",
    "BEFORE_LOAD",
    "AFTER_LOAD",
    "FIT_START",
    "ITERATION_START",
    "EPOCH_START",
    "BEFORE_DATALOADER",
    "AFTER_DATALOADER",
    "BATCH_START",
    "BEFORE_TRAIN_BATCH",
    "BEFORE_FORWARD",
    "AFTER_FORWARD",
    "BEFORE_LOSS",
    "AFTER_LOSS",
    "BEFORE_BACKWARD",
    "AFTER_BACKWARD",
    "AFTER_TRAIN_BATCH",
    "BATCH_END",
    "BATCH_CHECKPOINT",
    "EPOCH_END",
    "EPOCH_CHECKPOINT",
    "ITERATION_END",
    "ITERATION_CHECKPOINT",
    "FIT_END",
    "EVAL_BEFORE_ALL",
    "EVAL_START",
    "EVAL_BATCH_START",
    "EVAL_BEFORE_FORWARD",
    "EVAL_AFTER_FORWARD",
    "EVAL_BATCH_END",
    "EVAL_END",
    "EVAL_AFTER_ALL",
    "EVAL_STANDALONE_START",
    "EVAL_STANDALONE_END",
    "PREDICT_START",
    "PREDICT_BATCH_START",
    "PREDICT_BEFORE_FORWARD",
    "PREDICT_AFTER_FORWARD",
    "PREDICT_BATCH_END",
    "PREDICT_END",
]

Batch = namedtuple("Batch", ["inputs", "labels"])


def _targets():
    return torch.tensor([0, 2, 1])


def _logits():
    return torch.zeros(3, 3)


def test_event_has_composers_40_names_in_order():
    assert [e.name for e in Event] == COMPOSER_EVENTS
    assert len(Event) == 40
    assert Event.AFTER_LOSS.is_after_event and not Event.EVAL_AFTER_FORWARD.is_after_event


@pytest.mark.parametrize("event", list(Event), ids=lambda e: e.name)
def test_label_smoothing_matches_exactly_the_loss_events(event):
    assert ls.LabelSmoothing().match(event, ls.State()) == (event in (Event.BEFORE_LOSS, Event.AFTER_LOSS))


@pytest.mark.parametrize(
    ("batch", "key"),
    [
        ((torch.zeros(3, 1), _targets()), 1),
        ([torch.zeros(3, 1), _targets()], 1),
        ({"x": torch.zeros(3, 1), "y": _targets()}, "y"),
        (Batch(torch.zeros(3, 1), _targets()), "labels"),
        (Batch(torch.zeros(3, 1), _targets()), 1),
        (
            {"pair": (torch.zeros(3, 1), _targets())},
            (lambda b: b["pair"][1], lambda b, value: {"pair": (b["pair"][0], value)}),
        ),
    ],
    ids=["tuple", "list", "dict", "namedtuple-name", "namedtuple-index", "getter-setter"],
)
def test_apply_smooths_then_restores_the_original_object(batch, key):
    state = ls.State(batch=batch, outputs=_logits())
    original = state.batch_get_item(key)
    engine = ls.Engine(state, [ls.LabelSmoothing(0.3, target_key=key)])
    with engine.loss_events():
        smoothed = state.batch_get_item(key)
        expected = torch.nn.functional.one_hot(original, 3).float() * 0.7 + 0.1
        torch.testing.assert_close(smoothed, expected)
    assert state.batch_get_item(key) is original
    assert torch.equal(original, _targets())


@pytest.mark.parametrize(
    "outputs",
    [_logits(), {"logits": _logits(), "loss": None}, SimpleNamespace(logits=_logits())],
    ids=["tensor", "dict", "object"],
)
def test_logits_are_found_in_model_outputs(outputs):
    state = ls.State(batch=(None, _targets()), outputs=outputs)
    ls.LabelSmoothing(0.1).apply(Event.BEFORE_LOSS, state, ls.Logger())
    assert state.batch[1].shape == (3, 3)


def test_outputs_without_logits_are_refused():
    state = ls.State(batch=(None, _targets()), outputs={"scores": _logits()})
    with pytest.raises(TypeError, match=r"state.outputs: expected a Tensor, a dict with 'logits'"):
        ls.LabelSmoothing(0.1).apply(Event.BEFORE_LOSS, state, ls.Logger())


def test_targets_restored_when_the_loss_raises():
    targets = _targets()
    state = ls.State(batch=(None, targets), outputs=_logits())
    engine = ls.Engine(state, [ls.LabelSmoothing(0.1)])
    with pytest.raises(RuntimeError, match="boom"), engine.loss_events():
        assert state.batch[1].is_floating_point()
        raise RuntimeError("boom")
    assert state.batch[1] is targets


def test_restored_targets_keep_dtype_and_device_and_caller_batch_is_untouched():
    targets = torch.tensor([1, 0, 2], dtype=torch.int32)
    batch = {"x": torch.zeros(3), "y": targets}
    state = ls.State(batch=batch, outputs=_logits().double())
    engine = ls.Engine(state, [ls.LabelSmoothing(0.1, target_key="y")])
    with engine.loss_events():
        assert batch["y"] is targets  # the caller's dict is not written
        assert state.batch["y"].dtype == torch.float64
    assert state.batch["y"] is targets and state.batch["y"].dtype == torch.int32


def test_missing_target_key_is_a_clear_error():
    state = ls.State(batch={"x": torch.zeros(3)}, outputs=_logits())
    with pytest.raises(ValueError, match=r"target_key: expected a key that the batch \(dict\) has, got 'y'"):
        ls.Engine(state, [ls.LabelSmoothing(0.1, target_key="y")]).run_event(Event.BEFORE_LOSS)
    with pytest.raises(ValueError, match=r"target_key: .*got 5"):
        ls.State(batch=(1, 2)).batch_get_item(5)


class Recorder(ls.Algorithm):
    def __init__(self, name, log):
        self.name, self.log = name, log

    def match(self, event, state):
        return event in (Event.BEFORE_LOSS, Event.AFTER_LOSS)

    def apply(self, event, state, logger):
        self.log.append((self.name, event.name))
        return 7


def test_engine_reverses_order_on_after_events_and_records_traces():
    log = []
    engine = ls.Engine(ls.State(), [Recorder("a", log), Recorder("b", log)])
    with engine.loss_events():
        pass
    assert log == [("a", "BEFORE_LOSS"), ("b", "BEFORE_LOSS"), ("b", "AFTER_LOSS"), ("a", "AFTER_LOSS")]
    trace = engine.traces["Recorder/AFTER_LOSS"]
    assert trace.run and trace.exit_code == 7
    assert not engine.run_event(Event.INIT)[0].run
    assert engine.logger.records[0]["kind"] == "traces"


def test_smoothing_alias_repr_and_state_dict():
    algorithm = ls.LabelSmoothing(smoothing=0.2, target_key="y")
    assert algorithm.alpha == 0.2
    assert repr(algorithm).startswith("LabelSmoothing(alpha=0.2, target_key='y'")
    assert algorithm.state_dict()["hparams"]["alpha"] == 0.2
    algorithm.load_state_dict(algorithm.state_dict())
    assert ls.LabelSmoothing().alpha == 0.1
    with pytest.raises(ValueError, match=r"^smoothing: "):
        ls.LabelSmoothing(0.1, smoothing=0.2)


def test_state_is_keyword_only_and_all_optional():
    state = ls.State()
    assert state.batch is None and state.step == 0
    with pytest.raises(TypeError):
        ls.State((1, 2))  # type: ignore[misc]


def test_logger_keeps_records_and_writes_destinations(tmp_path, capsys):
    path = tmp_path / "log.jsonl"
    logger = ls.Logger([ls.PrintDestination(), ls.JSONLinesDestination(path)])
    logger.log_hyperparameters({"alpha": 0.1})
    logger.log_metrics({"loss": torch.tensor(0.5)}, step=2)
    logger.log_traces({"t": 1})
    assert [r["kind"] for r in logger.records] == ["hyperparameters", "metrics", "traces"]
    assert "loss=0.5" in capsys.readouterr().out
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[1] == {"kind": "metrics", "step": 2, "data": {"loss": 0.5}}
    assert [x.item() for x in logger.metrics("loss")] == [0.5]


def test_segmentation_with_ignore_label_through_the_algorithm():
    targets = torch.tensor([[[0, 255], [1, 2]]])
    logits = torch.randn(1, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    state = ls.State(batch=(None, targets), outputs=logits)
    engine = ls.Engine(state, [ls.LabelSmoothing(0.1, ignore_index=255)])
    with engine.loss_events():
        loss = ls.soft_cross_entropy(state.outputs, state.batch[1])
    expected = torch.nn.functional.cross_entropy(logits, targets, ignore_index=255, label_smoothing=0.1)
    torch.testing.assert_close(loss, expected)
