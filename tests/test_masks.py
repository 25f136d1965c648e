import itertools

import pytest
import torch

from kickbench.compress.magnitude import magnitude_mask
from kickbench.compress.masks import nm_mask, unstructured_mask


def brute_force_unstructured(scores, sparsity):
    flat = scores.flatten().tolist()
    k = int(round(sparsity * len(flat)))
    dropped = sorted(range(len(flat)), key=lambda i: flat[i])[:k]
    keep = torch.ones(len(flat), dtype=torch.bool)
    keep[dropped] = False
    return keep.reshape(scores.shape)


def brute_force_nm(scores, n, m):
    keep = torch.zeros_like(scores, dtype=torch.bool)
    for r, g in itertools.product(range(scores.shape[0]), range(0, scores.shape[1], m)):
        group = scores[r, g:g + m].tolist()
        for j in sorted(range(m), key=lambda j: -group[j])[:n]:
            keep[r, g + j] = True
    return keep


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.25, 0.5, 0.9])
def test_magnitude_unstructured_equals_brute_force(sparsity):
    w = torch.randn(12, 20, generator=torch.Generator().manual_seed(1))
    mask = magnitude_mask(w, sparsity, None)
    assert torch.equal(mask, brute_force_unstructured(w.abs(), sparsity))
    assert (~mask).sum().item() == round(sparsity * w.numel())


@pytest.mark.parametrize("n, m", [(2, 4), (4, 8), (1, 4)])
def test_nm_mask_equals_brute_force_and_is_exact(n, m):
    w = torch.randn(6, 32, generator=torch.Generator().manual_seed(2))
    mask = magnitude_mask(w, 0.0, (n, m))
    assert torch.equal(mask, brute_force_nm(w.abs(), n, m))
    assert (mask.reshape(-1, m).sum(dim=1) == n).all()


def test_per_row_unstructured_prunes_each_row_equally():
    mask = unstructured_mask(torch.rand(5, 40), 0.3, per_row=True)
    assert ((~mask).sum(dim=1) == 12).all()


def test_nm_needs_a_divisible_width():
    with pytest.raises(ValueError, match="multiple of 4, got 10"):
        nm_mask(torch.rand(3, 10), 2, 4)
