"""Shared test helpers: synthetic layers with correlated inputs."""

import torch


def correlated_inputs(tokens=512, cols=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(tokens, cols // 4, generator=g)
    x = z @ torch.randn(cols // 4, cols, generator=g) + 0.1 * torch.randn(tokens, cols, generator=g)
    return x * torch.logspace(-1, 1, cols)[torch.randperm(cols, generator=g)]  # uneven scales


def rel_error(w, w2, x):
    return (torch.linalg.norm(x @ (w - w2).T) / torch.linalg.norm(x @ w.T)).item()
