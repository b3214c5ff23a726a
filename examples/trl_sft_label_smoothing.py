"""Label smoothing in TRL's SFTTrainer, whose default loss has none.

TRL's default SFT loss takes the log-probability of each label through a
chunked or fused LM head (``loss_type="chunked_nll"`` in TRL 1.7 to 1.14,
``"nll"`` computed the same way from 1.15) and has no smoothing term.
``compute_loss_func=CausalLMLoss(alpha)`` gives the trainer the smoothed
causal-LM loss instead: shifted labels, ``-100`` ignored, the sum divided by
the trainer's ``num_items_in_batch``. Set ``loss_type="nll"``: under the
``"chunked_nll"`` default of 1.7 to 1.14, SFTTrainer reads a token count that
only its chunked forward returns, and a ``compute_loss_func`` makes it fail
(``AttributeError: ... 'num_valid_tokens'``).

Builds everything locally (a word-level tokenizer from a small vocabulary and
a tiny Llama from a config: nothing is downloaded), trains a few steps with
each loss, and prints the first step's loss beside
``F.cross_entropy(label_smoothing=...)`` of the untrained model on the same
batch::

    HF_HUB_OFFLINE=1 python examples/trl_sft_label_smoothing.py --steps 3
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import torch.nn.functional as F
from datasets import Dataset
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from trl import SFTConfig, SFTTrainer

from labelsmooth.integrations.transformers import CausalLMLoss

ALPHA = 0.1
WORDS = ["the", "a", "cat", "dog", "bird", "sat", "ran", "flew", "on", "under", "over", "mat", "log", "tree",
         "and", "then"]


def tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over ``WORDS`` plus pad, end-of-sequence and unknown tokens."""
    vocab = {token: i for i, token in enumerate(["<pad>", "<eos>", "<unk>", *WORDS])}
    words = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=words, pad_token="<pad>", eos_token="<eos>",
                                   unk_token="<unk>")


def sentences(n: int = 8) -> Dataset:
    """``n`` word sequences of uneven length (so the collator pads), the same on every run."""
    gen = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(n):
        length = int(torch.randint(3, 12, (1,), generator=gen))
        rows.append(" ".join(WORDS[int(i)] for i in torch.randint(0, len(WORDS), (length,), generator=gen)))
    return Dataset.from_dict({"text": rows})


def train(steps: int, compute_loss_func=None) -> tuple[SFTTrainer, LlamaForCausalLM]:
    """Train a fresh tiny Llama with SFTTrainer; return the trainer and a copy of the untrained model."""
    tok = tokenizer()
    torch.manual_seed(0)
    # A *ForCausalLM class: Trainer then counts num_items_in_batch over the shifted labels. (For
    # GPT2LMHeadModel, whose loss_type is None, transformers 5.24 counts every label, one per
    # sequence too many, and every loss it divides by that count comes out too small.)
    model = LlamaForCausalLM(LlamaConfig(
        num_hidden_layers=1, hidden_size=32, intermediate_size=64, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=32, vocab_size=len(tok),
        bos_token_id=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    ))
    untrained = copy.deepcopy(model)
    data = sentences()
    with tempfile.TemporaryDirectory() as out, warnings.catch_warnings():
        # TRL 1.16 marks compute_loss_func deprecated for v2.0 (an extra no-grad forward for its metrics).
        warnings.filterwarnings("ignore", message=".*compute_loss_func.*", category=FutureWarning)
        args = SFTConfig(
            output_dir=out, per_device_train_batch_size=len(data), max_steps=steps, learning_rate=0.1,
            optim="sgd", logging_steps=1, report_to=[], save_strategy="no", use_cpu=True, bf16=False,
            seed=0, disable_tqdm=True, max_length=32, loss_type="nll",  # not 1.7-1.14's chunked_nll
        )
        trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok,
                             compute_loss_func=compute_loss_func)
        trainer.train()
    return trainer, untrained


def logged_losses(trainer: SFTTrainer) -> list[float]:
    return [log["loss"] for log in trainer.state.log_history if "loss" in log]


def first_batch_loss(trainer: SFTTrainer, model: LlamaForCausalLM, alpha: float) -> float:
    """``F.cross_entropy(label_smoothing=alpha)`` of ``model`` over every predicted token of the data set.

    The first step's batch is the whole (tokenized) data set, one sequence at
    a time here, without padding: position ``t`` predicts token ``t + 1``.
    """
    total, count = 0.0, 0
    with torch.no_grad():
        for ids in trainer.train_dataset["input_ids"]:
            ids = torch.tensor(ids)
            logits = model(ids[None]).logits[0, :-1]
            total += float(F.cross_entropy(logits, ids[1:], label_smoothing=alpha, reduction="sum"))
            count += len(ids) - 1
    return total / count


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    smoothed, untrained = train(args.steps, compute_loss_func=CausalLMLoss(alpha=ALPHA))
    default, _ = train(args.steps)
    print(f"SFTTrainer + CausalLMLoss({ALPHA}), step losses: {logged_losses(smoothed)}")
    print(f"  step 1 {logged_losses(smoothed)[0]:.6f} vs F.cross_entropy(label_smoothing={ALPHA}) "
          f"{first_batch_loss(smoothed, untrained, ALPHA):.6f}")
    print(f"SFTTrainer default loss, step losses: {logged_losses(default)}")
    print(f"  step 1 {logged_losses(default)[0]:.6f} vs F.cross_entropy(label_smoothing=0) "
          f"{first_batch_loss(default, untrained, 0.0):.6f}")


if __name__ == "__main__":
    main()
