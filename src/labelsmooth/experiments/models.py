"""Small models for ``compare``: a body that gives penultimate activations and a linear head."""

from __future__ import annotations

from torch import Tensor, nn

from labelsmooth.experiments.data import DataSet

WIDTH = 64


class Classifier(nn.Module):
    """``head(body(x))``; :meth:`features` gives the penultimate activations.

    For segmentation the head is a 1x1 convolution, so its weight, viewed as
    ``(C, D)``, is the per-pixel last layer.
    """

    def __init__(self, body: nn.Module, head: nn.Linear | nn.Conv2d) -> None:
        super().__init__()
        self.body = body
        self.head = head

    def features(self, x: Tensor) -> Tensor:
        out: Tensor = self.body(x)
        return out

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.head(self.features(x))
        return out

    def class_weights(self) -> Tensor:
        """The last layer's weight as ``(C, D)``."""
        return self.head.weight.detach().reshape(self.head.weight.shape[0], -1)


def small_cnn(in_channels: int, num_classes: int) -> Classifier:
    """Two 3x3 convolutions, a 2x2 max-pool, a 4x4 average grid, a 64-wide hidden layer."""
    body = nn.Sequential(
        nn.Conv2d(in_channels, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(32 * 16, WIDTH), nn.ReLU(),
    )
    return Classifier(body, nn.Linear(WIDTH, num_classes))


def tiny_segnet(in_channels: int, num_classes: int) -> Classifier:
    """Four 3x3 convolutions (dilations 1, 2, 4, 1: a 17-pixel receptive field) and a 1x1 head.

    Full resolution throughout; the receptive field covers a whole shape, so the
    net can tell a disc from a square.
    """
    body = nn.Sequential(
        nn.Conv2d(in_channels, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=2, dilation=2), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=4, dilation=4), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
    )
    return Classifier(body, nn.Conv2d(32, num_classes, 1))


def mlp(in_features: int, num_classes: int) -> Classifier:
    """Two hidden layers of 64 units."""
    body = nn.Sequential(nn.Linear(in_features, WIDTH), nn.ReLU(), nn.Linear(WIDTH, WIDTH), nn.ReLU())
    return Classifier(body, nn.Linear(WIDTH, num_classes))


def build_model(data: DataSet) -> Classifier:
    """The model that fits ``data``: segmentation net, CNN for images, MLP for tables."""
    inputs = data.train.inputs
    if data.task == "segmentation":
        return tiny_segnet(inputs.shape[1], data.num_classes)
    if data.kind == "image":
        return small_cnn(inputs.shape[1], data.num_classes)
    return mlp(inputs.shape[1], data.num_classes)
