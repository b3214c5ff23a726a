"""Label smoothing for a Hugging Face causal LM, through the Trainer or through the model itself.

Builds a tiny GPT-2 from a config (nothing is downloaded) and trains it three
ways: ``Trainer(label_smoothing_factor=...)``, ``Trainer(compute_loss_func=CausalLMLoss(...))``
and ``model.loss_function = CausalLMLoss(...)``, with gradient accumulation over
sequences of uneven padding. The three end at the same parameters
(``CausalLMLoss(alpha, convention="others")`` gives fairseq's target instead)::

    HF_HUB_OFFLINE=1 python examples/transformers_label_smoothing.py --steps 2
"""

from __future__ import annotations

import argparse
import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

from labelsmooth.integrations.transformers import CausalLMLoss

ALPHA = 0.1


def sequences(n=16, length=12, vocab=64):
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (n, length), generator=gen)
    labels = ids.clone()
    for row in range(n):
        labels[row, int(torch.randint(2, length + 1, (1,), generator=gen)) :] = -100  # padding
    return [{"input_ids": i, "labels": y} for i, y in zip(ids, labels, strict=True)]


def train(steps, loss_hook=None, **trainer_kwargs):
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, n_positions=16, vocab_size=64,
                                       resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    if loss_hook is not None:
        model.loss_function = loss_hook  # model(input_ids, labels=...).loss is now smoothed
    smoothing = trainer_kwargs.pop("label_smoothing_factor", 0.0)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=2, gradient_accumulation_steps=2, max_steps=steps,
            learning_rate=0.05, optim="sgd", label_smoothing_factor=smoothing, report_to=[],
            save_strategy="no", use_cpu=True, seed=0, disable_tqdm=True,
        )
        Trainer(model=model, args=args, train_dataset=sequences(), **trainer_kwargs).train()
    return torch.nn.utils.parameters_to_vector(model.parameters()).detach()


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    reference = train(args.steps, label_smoothing_factor=ALPHA)
    trainer_loss = train(args.steps, compute_loss_func=CausalLMLoss(ALPHA))
    model_loss = train(args.steps, loss_hook=CausalLMLoss(ALPHA))
    print(f"max |compute_loss_func - label_smoothing_factor| over parameters: "
          f"{(trainer_loss - reference).abs().max().item():.2e}")
    print(f"max |model.loss_function - label_smoothing_factor| over parameters: "
          f"{(model_loss - reference).abs().max().item():.2e}")


if __name__ == "__main__":
    main()
