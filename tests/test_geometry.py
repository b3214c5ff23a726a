"""The template-plane projection of Müller et al.'s penultimate-layer figure.

Oracle: an orthonormal basis of the plane from ``torch.linalg.qr``, and distances between templates.
"""

from __future__ import annotations

import pytest
import torch

from labelsmooth.experiments._geometry import template_plane_projection


def test_template_plane_projection_orthonormal_basis():
    generator = torch.Generator().manual_seed(0)
    weights = torch.randn(5, 8, generator=generator, dtype=torch.float64)
    features = torch.randn(20, 8, generator=generator, dtype=torch.float64)
    coords = template_plane_projection(features, weights, (1, 3, 4))
    # Independent check: least-squares coordinates in an orthonormal basis from QR of the plane's directions.
    directions = torch.stack([weights[3] - weights[1], weights[4] - weights[1]], dim=1)
    q, _ = torch.linalg.qr(directions)
    expected = (features - weights[1]) @ q
    # QR may flip the signs of its columns; distances and the plane itself do not change.
    assert torch.allclose(coords.abs(), expected.abs(), atol=1e-10)
    # Templates land on their own places in the plane: the first at the origin, pairwise distances kept.
    templates = template_plane_projection(weights[[1, 3, 4]], weights, (1, 3, 4))
    assert torch.allclose(templates[0], torch.zeros(2, dtype=torch.float64), atol=1e-12)
    for i, j in [(0, 1), (0, 2), (1, 2)]:
        distance = (weights[[1, 3, 4]][i] - weights[[1, 3, 4]][j]).norm()
        assert (templates[i] - templates[j]).norm().item() == pytest.approx(distance.item())


def test_template_plane_projection_keeps_float32_and_does_not_mutate():
    weights = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    features = torch.randn(6, 4, generator=torch.Generator().manual_seed(2))
    before = features.clone()
    out = template_plane_projection(features, weights, (0, 1, 2))
    assert out.dtype == torch.float32 and out.shape == (6, 2)
    assert torch.equal(features, before)


@pytest.mark.parametrize(
    ("classes", "match"),
    [
        ((0, 1), "three class indices"), ((0, 0, 1), "distinct"), ((0, 1, 7), "distinct"),
        ((0, 1, 2.0), "an int"),
    ],
    ids=["two", "repeated", "out-of-range", "float"],
)
def test_template_plane_projection_bad_classes(classes, match):
    with pytest.raises((ValueError, TypeError), match=match):
        template_plane_projection(torch.zeros(2, 4), torch.randn(3, 4), classes)


def test_template_plane_projection_collinear_templates():
    weights = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])
    with pytest.raises(ValueError, match="span a plane"):
        template_plane_projection(torch.zeros(1, 2), weights, (0, 1, 2))
