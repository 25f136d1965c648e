"""GPTQ group grids both ways (issue 17): `gptq_groups` static (IST --static-groups) and dynamic
(IST's default), each checked against a direct re-implementation of IST-DASLab gptq.py's
GPTQ.fasterquant loop and quant.py's Quantizer.find_params, on small tensors."""

import copy

import pytest
import torch

from kickbench.compress.gptq import gptq_quantize
from kickbench.compress.spec import CompressionSpec


class _Quantizer:
    """IST quant.py Quantizer: perchannel=True, mse=False, weight=True."""

    def __init__(self, bits, sym):
        self.maxq, self.sym = torch.tensor(2**bits - 1), sym

    def find_params(self, x):
        tmp = torch.zeros(x.shape[0])
        xmin, xmax = torch.minimum(x.min(1)[0], tmp), torch.maximum(x.max(1)[0], tmp)
        if self.sym:
            xmax = torch.maximum(torch.abs(xmin), xmax)
            neg = xmin < 0
            if torch.any(neg):
                xmin[neg] = -xmax[neg]
        flat = (xmin == 0) & (xmax == 0)
        xmin[flat], xmax[flat] = -1, +1
        self.scale = ((xmax - xmin) / self.maxq).reshape(-1, 1)
        self.zero = (torch.full_like(self.scale, (self.maxq + 1) / 2) if self.sym
                     else torch.round(-xmin.reshape(-1, 1) / self.scale))

    def ready(self):
        return hasattr(self, "scale")


def _quantize(x, scale, zero, maxq):
    q = torch.clamp(torch.round(x / scale) + zero, 0, maxq)
    return scale * (q - zero)


def ist_fasterquant(W, H, bits, sym, blocksize=128, percdamp=.01, groupsize=-1, actorder=False,
                    static_groups=False):
    """IST-DASLab gptq.py GPTQ.fasterquant, step by step (Losses, DEBUG and timing left out)."""
    W, H = W.clone().float(), H.clone()
    columns = W.shape[1]
    quantizer = _Quantizer(bits, sym)
    if not quantizer.ready():
        quantizer.find_params(W)
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    if static_groups:
        groups = []
        for i in range(0, columns, groupsize):
            qz = copy.deepcopy(quantizer)
            qz.find_params(W[:, i:(i + groupsize)])
            groups.append(qz)
    if actorder:
        perm = torch.argsort(torch.diag(H), descending=True)
        W, H = W[:, perm], H[perm][:, perm]
        invperm = torch.argsort(perm)
    Q = torch.zeros_like(W)
    damp = percdamp * torch.mean(torch.diag(H))
    diag = torch.arange(columns)
    H[diag, diag] += damp
    H = torch.linalg.cholesky(H)
    H = torch.cholesky_inverse(H)
    Hinv = torch.linalg.cholesky(H, upper=True)
    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        W1 = W[:, i1:i2].clone()
        Q1, Err1 = torch.zeros_like(W1), torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            w, d = W1[:, i], Hinv1[i, i]
            if groupsize != -1:
                if not static_groups:
                    if (i1 + i) % groupsize == 0:
                        quantizer.find_params(W[:, (i1 + i):(i1 + i + groupsize)])
                else:
                    idx = i1 + i
                    if actorder:
                        idx = perm[idx]
                    quantizer = groups[idx // groupsize]
            q = _quantize(w.unsqueeze(1), quantizer.scale, quantizer.zero, quantizer.maxq).flatten()
            Q1[:, i] = q
            err1 = (w - q) / d
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1
        Q[:, i1:i2] = Q1
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    if actorder:
        Q = Q[:, invperm]
    return Q


def _problem(rows=12, cols=320, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(4 * cols, cols, generator=g) * torch.linspace(0.2, 3, cols)  # uneven H_jj
    X[:, 7] = 0  # a dead input
    H = 2 * X.T @ X / X.shape[0]
    W = torch.randn(rows, cols, generator=g)
    return W, H


CASES = [(g, act, groups) for g in (32, 64, 48, 160) for act in (False, True)
         for groups in ("static", "dynamic")]


@pytest.mark.parametrize("group_size, act_order, groups", CASES)
def test_each_mode_matches_ist_fasterquant(group_size, act_order, groups):
    W, H = _problem()
    ours, _ = gptq_quantize(W, H, 3, group_size, False, act_order, 0.01, groups)
    ref = ist_fasterquant(W, H, 3, False, groupsize=group_size, actorder=act_order,
                          static_groups=groups == "static")
    # float32, different lazy-batch sizes: the same grid points, up to rare rounding ties
    close = torch.isclose(ours, ref, atol=1e-4, rtol=1e-4)
    assert close.float().mean() > 0.995, (close.float().mean(), (ours - ref).abs().max())


def test_symmetric_grids_match_where_every_group_has_a_negative_weight():
    W, H = _problem(seed=1)
    W = W - 0.5 * W.abs().max()  # every group of every row holds negative values
    for groups in ("static", "dynamic"):
        ours, _ = gptq_quantize(W, H, 4, 64, True, True, 0.01, groups)
        ref = ist_fasterquant(W, H, 4, True, groupsize=64, actorder=True,
                              static_groups=groups == "static")
        assert torch.isclose(ours, ref, atol=1e-4, rtol=1e-4).float().mean() > 0.995


def test_the_two_modes_differ_and_static_act_order_groups_original_columns():
    W, H = _problem()
    static, _ = gptq_quantize(W, H, 3, 32, False, True, 0.01, "static")
    dynamic, _ = gptq_quantize(W, H, 3, 32, False, True, 0.01, "dynamic")
    assert not torch.allclose(static, dynamic)
    # static: each original group of 32 columns has at most 2^3 values per row
    for a in range(0, W.shape[1], 32):
        assert all(len(set(r.tolist())) <= 8 for r in static[:, a:a + 32])


def test_option_static_is_the_default_and_stays_out_of_the_key():
    plain = CompressionSpec("gptq", bits=3, group_size=64, act_order=True, symmetric=True)
    assert "options" not in plain.key()
    assert CompressionSpec("gptq", bits=3, group_size=64, act_order=True, symmetric=True,
                           options={"gptq_groups": "static"}) == plain
    dyn = CompressionSpec("gptq", bits=3, group_size=64, options={"gptq_groups": "dynamic"})
    assert dyn.key()["options"] == {"gptq_groups": "dynamic"}
    assert CompressionSpec.from_key(dyn.key()) == dyn
    assert dyn.label == "gptq w3 g64 dynamic-groups"
    with pytest.raises(ValueError, match="use one of static, dynamic"):
        CompressionSpec("gptq", bits=3, options={"gptq_groups": "mid"})
