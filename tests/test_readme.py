"""The README's Python blocks run as written, each in a fresh namespace, in a temporary folder.

A block that cannot run here is listed in ``CANNOT_RUN`` with the reason, which
pytest shows for the skip; a listed block that no longer exists fails. A
statement followed by ``# tensor(...)`` must print that value.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.MULTILINE | re.DOTALL)

#: A line that identifies the block -> why it cannot run in a test process.
CANNOT_RUN = {
    "result = compare(model=make_model, train=train_set, test=test_set": (
        "it calls compare() on the reader's own make_model and datasets; examples/compare_your_model.py "
        "makes the same call on its own model and data (tests/test_compare_example.py)"
    ),
    "n = global_num_items(targets)": (
        "it needs an initialized process group and a rank's targets; tests/test_distributed.py runs the "
        "global-count mean on gloo"
    ),
    "with loss_events(self, batch, logits) as state:": (
        "it is a fragment of a LightningModule's training_step; examples/lightning_label_smoothing.py is the "
        "whole program (tests/test_lightning.py runs it)"
    ),
}

#: ``expression  # tensor(...)``: the value the README promises for an expression.
PROMISE = re.compile(r"^(?P<expr>[^#\s].*?)\s+#\s*(?P<value>tensor\([^)]*\))")


def _reason(block: str) -> str | None:
    reasons = [reason for line, reason in CANNOT_RUN.items() if line in block]
    assert len(reasons) <= 1
    return reasons[0] if reasons else None


def _block_id(block: str) -> str:
    first = next(line for line in block.splitlines() if line.strip() and not line.startswith("import"))
    return re.sub(r"\W+", "-", first)[:40].strip("-")


def test_every_block_that_cannot_run_is_still_in_the_readme():
    for line in CANNOT_RUN:
        assert sum(line in block for block in BLOCKS) == 1, f"no README block has {line!r}"


def test_the_readme_has_python_blocks_and_promised_values():
    assert len(BLOCKS) >= 5
    promises = [line for block in BLOCKS for line in block.splitlines() if PROMISE.match(line)]
    assert len(promises) >= 2, promises  # the worked example's two losses


@pytest.mark.parametrize("block", BLOCKS, ids=[_block_id(b) for b in BLOCKS])
def test_readme_block_runs(block, tmp_path, monkeypatch, capsys):
    reason = _reason(block)
    if reason is not None:
        pytest.skip(reason)
    monkeypatch.chdir(tmp_path)  # a block that writes files writes them here
    namespace: dict = {"__name__": "__readme__"}
    exec(compile(block, str(README), "exec"), namespace)
    for line in block.splitlines():
        promise = PROMISE.match(line)
        if promise:
            value = eval(promise["expr"], namespace)
            assert repr(value) == promise["value"], line
