"""KeepBest + save_run on a Hugging Face Trainer: the record's early-stopped logits are those of the weights
of the best evaluation, as the test's own callback saw them (a tiny GPT-2 classifier built from a config)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded: the model is built from a config

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from labelsmooth.experiments import read_run  # noqa: E402
from labelsmooth.integrations.transformers import KeepBest, save_run  # noqa: E402

VOCAB, LENGTH, CLASSES = 32, 8, 3


def sequences(n: int, seed: int) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (n, LENGTH), generator=gen)
    labels = ids[:, 0] % CLASSES  # learnable from the first token
    return [{"input_ids": i, "labels": y} for i, y in zip(ids, labels, strict=True)]


class Evaluations(transformers.TrainerCallback):
    """Every evaluation's eval_loss and a copy of the weights then: the test's own record."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, dict[str, torch.Tensor]]] = []

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.seen.append((metrics["eval_loss"], weights))


def logits_of(state: dict[str, torch.Tensor], model, data) -> np.ndarray:
    final = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    with torch.no_grad():
        logits = model(input_ids=torch.stack([d["input_ids"] for d in data])).logits.numpy()
    model.load_state_dict(final)
    return logits


@pytest.mark.parametrize("greater_is_better", [False, True])
def test_the_record_holds_the_best_evaluations_logits(tmp_path, greater_is_better):
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=LENGTH, n_embd=16, n_layer=1, n_head=2,
                                     num_labels=CLASSES, pad_token_id=0)
    model = transformers.GPT2ForSequenceClassification(config)
    args = transformers.TrainingArguments(str(tmp_path / "hf"), num_train_epochs=3, learning_rate=3e-3,
                                          per_device_train_batch_size=8, eval_strategy="epoch",
                                          save_strategy="no", report_to=[], use_cpu=True, seed=0)
    seen, keep = Evaluations(), KeepBest(greater_is_better=greater_is_better)
    train, val, test = sequences(48, 1), sequences(16, 2), sequences(16, 3)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=train, eval_dataset=val,
                                   callbacks=[seen, keep])
    trainer.train()
    record = read_run(save_run(trainer, tmp_path / "run.npz", alpha=0.0, seed=0, test_dataset=test,
                               val_dataset=val))
    losses = [loss for loss, _ in seen.seen]
    best = (max if greater_is_better else min)(range(len(losses)), key=losses.__getitem__)
    assert len(set(losses)) == len(losses) == 3 and record.best_epoch == best + 1
    # eval_loss falls every epoch here: "min" takes the final weights, "max" reloads the first epoch's.
    assert best == (0 if greater_is_better else 2)
    np.testing.assert_allclose(record.test.es_logits, logits_of(seen.seen[best][1], model, test), atol=1e-5)
    np.testing.assert_allclose(record.val.es_logits, logits_of(seen.seen[best][1], model, val), atol=1e-5)
    # The final weights stay in the model, and their logits in the record.
    np.testing.assert_allclose(record.test.logits, logits_of(model.state_dict(), model, test), atol=1e-5)


def test_keep_best_names_a_metric_the_evaluation_lacks():
    keep = KeepBest("eval_accuracy")
    with pytest.raises(ValueError, match=r"metric: expected a key of the evaluation's metrics \(eval_loss\)"):
        keep.on_evaluate(None, None, None, metrics={"eval_loss": 1.0}, model=torch.nn.Linear(1, 1))


def test_a_causal_lm_with_keep_best_is_refused(tmp_path):
    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=LENGTH, n_embd=16, n_layer=1, n_head=2)
    args = transformers.TrainingArguments(str(tmp_path / "hf"), report_to=[], use_cpu=True)
    model = transformers.GPT2LMHeadModel(config)
    trainer = transformers.Trainer(model=model, args=args, callbacks=[KeepBest()])
    data = [{"input_ids": d["input_ids"], "labels": d["input_ids"]} for d in sequences(4, 5)]
    with pytest.raises(ValueError, match=r"trainer: expected no KeepBest callback for a causal LM"):
        save_run(trainer, tmp_path / "run.npz", alpha=0.0, seed=0, test_dataset=data)
    assert not (tmp_path / "run.npz").exists()
