"""Label smoothing in five lines: the loss, the dense targets, and the training-loop algorithm."""

import torch

import labelsmooth as ls

torch.manual_seed(0)
logits = torch.randn(4, 10, requires_grad=True)
targets = torch.tensor([3, 1, 4, 1])

loss = ls.cross_entropy(logits, targets, alpha=0.1)
reference = torch.nn.functional.cross_entropy(logits, targets, label_smoothing=0.1)
print(f"labelsmooth.cross_entropy: {loss.item():.6f}   torch label_smoothing=0.1: {reference.item():.6f}")

print("smoothed target of the first row:", ls.smooth_labels(logits, targets, 0.1)[0].tolist())

state = ls.State(batch=(torch.zeros(4, 8), targets), outputs=logits)
engine = ls.Engine(state, [ls.LabelSmoothing(alpha=0.1)])
with engine.loss_events():
    step_loss = ls.soft_cross_entropy(state.outputs, state.batch[1])
print(f"loss inside LabelSmoothing: {step_loss.item():.6f}; targets restored: {state.batch[1] is targets}")
