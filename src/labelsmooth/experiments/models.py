"""Small models for ``compare`` and the last layer of any model, whose input is the penultimate layer."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from labelsmooth.experiments.data import DataSet, fail

__all__ = [
    "BuiltinModel", "Classifier", "build_model", "class_weights", "cnn1d", "last_layer", "mlp", "small_cnn",
    "tiny_segnet"
]

WIDTH = 64


class Classifier(nn.Module):
    """``head(body(x))``: the head's input is the penultimate layer.

    For segmentation the head is a 1x1 convolution, so its weight, viewed as
    ``(C, D)``, is the per-pixel last layer.
    """

    def __init__(self, body: nn.Module, head: nn.Linear | nn.Conv2d) -> None:
        super().__init__()
        self.body = body
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.head(self.body(x))
        return out


def small_cnn(in_channels: int, num_classes: int) -> Classifier:
    """Two 3x3 convolutions, a 2x2 max-pool, a 4x4 average grid, a 64-wide hidden layer."""
    body = nn.Sequential(
        nn.Conv2d(in_channels, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(32 * 16, WIDTH), nn.ReLU(),
    )
    return Classifier(body, nn.Linear(WIDTH, num_classes))


def cnn1d(in_channels: int, length: int, num_classes: int, *, width: int = 32) -> Classifier:
    """Three 1-D convolutions with stride 2 (kernels 5, 3, 3), then the flattened maps into the head.

    The shape of the CNN Greydanus trains on MNIST-1D (94% test accuracy
    there, against 68% for an MLP), a little wider.
    """
    body = nn.Sequential(
        nn.Conv1d(in_channels, width, 5, stride=2, padding=1), nn.ReLU(),
        nn.Conv1d(width, width, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv1d(width, width, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
    )
    for kernel in (5, 3, 3):  # the output length of each stride-2 convolution above
        length = (length + 2 - kernel) // 2 + 1
    return Classifier(body, nn.Linear(width * length, num_classes))


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


@dataclass(frozen=True)
class BuiltinModel:
    """The model factory ``compare`` uses without ``model=``: ``BuiltinModel(...)(num_classes)``.

    A segmentation net for label maps, a CNN for ``(C, H, W)`` images, a 1-D CNN
    for ``(C, L)`` signals, an MLP for ``(D,)`` table rows.
    """

    task: str
    input_shape: tuple[int, ...]

    def __call__(self, num_classes: int) -> Classifier:
        if self.task == "segmentation" and len(self.input_shape) == 3:
            return tiny_segnet(self.input_shape[0], num_classes)
        if self.task == "classification" and len(self.input_shape) == 3:
            return small_cnn(self.input_shape[0], num_classes)
        if self.task == "classification" and len(self.input_shape) == 2:
            return cnn1d(self.input_shape[0], self.input_shape[1], num_classes)
        if self.task == "classification" and len(self.input_shape) == 1:
            return mlp(self.input_shape[0], num_classes)
        raise fail("model", "a model factory (the built-in models take images (C, H, W), signals (C, L) or "
                   "table rows (D,))",
                   f"none, for {self.task} inputs of shape {self.input_shape}")

    @property
    def name(self) -> str:
        return f"labelsmooth.experiments.models.BuiltinModel({self.task}, {self.input_shape})"


def build_model(data: DataSet) -> Classifier:
    """The model that fits ``data``: segmentation net, CNN for images, MLP for tables."""
    sample = data.train[0][0]
    return BuiltinModel(data.task, tuple(sample.shape))(data.num_classes)


def _is_last_layer(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1))


def last_layer(model: nn.Module, num_classes: int, name: str | None = None) -> tuple[str | None, str]:
    """The name of the layer whose input is the penultimate layer, or ``None`` and why not.

    Without ``name``: the model's last ``nn.Linear`` or 1x1 ``nn.Conv2d`` (in
    registration order), if it has ``num_classes`` outputs. With ``name``:
    that module, which must be such a layer.
    """
    modules = dict(model.named_modules())
    if name is not None:
        module = modules.get(name)
        if module is None or not _is_last_layer(module):
            found = [n for n, m in modules.items() if _is_last_layer(m)]
            raise fail("penultimate", f"the name of an nn.Linear or 1x1 nn.Conv2d of the model (it has "
                       f"{found or 'none'})", name)
        candidates = [name]
    else:
        candidates = [n for n, m in modules.items() if _is_last_layer(m)]
    if not candidates:
        return None, "the model has no nn.Linear or 1x1 nn.Conv2d"
    layer = modules[candidates[-1]]
    outputs = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
    if outputs != num_classes and name is not None:
        raise fail("penultimate", f"a layer with {num_classes} outputs, one per class",
                   f"{name!r} with {outputs}")
    if outputs != num_classes:
        return None, (f"the model's last nn.Linear or 1x1 nn.Conv2d, {candidates[-1]!r}, has {outputs} "
                      "outputs, "
                      f"not {num_classes} (name the layer with penultimate=)")
    return candidates[-1], ""


def class_weights(layer: nn.Module) -> Tensor:
    """A last layer's weight as ``(C, D)``: the class templates of Müller et al.'s picture."""
    weight = layer.weight
    if not isinstance(weight, Tensor):
        raise fail("penultimate", "a layer with a weight tensor", type(layer).__name__)
    return weight.detach().reshape(weight.shape[0], -1)
