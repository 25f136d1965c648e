"""Layer-by-layer calibration shared by every method that needs activations.

Inputs of the first decoder block are captured once for the calibration set; then each block
is run with forward hooks on its linear layers (the method collects what it needs), the
block's linears are compressed, and the block is run again so the *compressed* outputs feed
the next block, as in the reference SparseGPT and Wanda code. Only one block's activations
are alive at a time.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..tasks.data import PROJECT_DATA, read_rows
from .layers import block_linears, decoder_blocks, weight_matrix

DEFAULT_SOURCE = PROJECT_DATA / "calibration.jsonl"


@dataclass(frozen=True)
class CalibrationSpec:
    """nsamples windows of seqlen tokens, drawn with `seed` from a text source.

    source: a JSONL file with a `text` field, a plain .txt file, or a Hugging Face dataset id
    (`allenai/c4` style rows with `text`). Documents are joined with a blank line and windows
    are cut from the joined token stream at random offsets, so documents shorter than seqlen
    are used whole (a window may span several documents) and long ones contribute in
    proportion to their length.
    """

    source: str | None = None
    nsamples: int = 16  # CPU-sized defaults, shared by the API, CLI and notebooks; the
    seqlen: int = 256   # reference methods use 128 x 2048 on GPUs
    seed: int = 0

    def __post_init__(self):
        if self.nsamples < 1 or self.seqlen < 2:
            raise ValueError(f"calibration needs nsamples >= 1 and seqlen >= 2, got "
                             f"nsamples={self.nsamples}, seqlen={self.seqlen}")


def read_texts(source: str | Path | None) -> list[str]:
    return [r["text"] for r in read_rows(source or DEFAULT_SOURCE, "calibration text")
            if r.get("text")]


def calibration_tokens(tokenizer, spec: CalibrationSpec) -> torch.Tensor:
    """[nsamples, seqlen] token windows, reproducible from (source, tokenizer, seed)."""
    ids = tokenizer("\n\n".join(read_texts(spec.source)), add_special_tokens=False,
                    return_tensors="pt")["input_ids"][0]
    if len(ids) <= spec.seqlen:
        raise ValueError(f"calibration text has {len(ids)} tokens, fewer than seqlen="
                         f"{spec.seqlen}; use a larger source or a shorter seqlen")
    gen = torch.Generator().manual_seed(spec.seed)
    starts = torch.randint(0, len(ids) - spec.seqlen, (spec.nsamples,), generator=gen)
    return torch.stack([ids[s:s + spec.seqlen] for s in starts.tolist()])


def tokens_hash(tokens: torch.Tensor) -> str:
    return hashlib.sha256(tokens.to(torch.int64).numpy().tobytes()).hexdigest()[:16]


class _Captured(Exception):
    pass


def capture_block_inputs(model, tokens: torch.Tensor) -> tuple[list[torch.Tensor], list[dict]]:
    """Hidden states entering the first decoder block, one [1, seqlen, hidden] per sample,
    and the keyword arguments the model passes to each block (masks, rotary embeddings).

    Keyword arguments are taken per block from one full forward of the first window: some
    families differ between blocks (Gemma 3 alternates sliding-window and global attention,
    each with its own mask and rotary embeddings). The other windows stop at block 0."""
    blocks = decoder_blocks(model)
    inputs: list[torch.Tensor] = []
    kwargs: list[dict] = [{} for _ in blocks]

    def hook(i, args, kw):
        if i == 0:
            inputs.append((args[0] if args else kw["hidden_states"]).detach())
        if not kwargs[i]:
            kwargs[i] = {k: v for k, v in kw.items() if k != "hidden_states"}
            kwargs[i]["use_cache"] = False
        elif i == 0:
            raise _Captured

    handles = [b.register_forward_pre_hook(lambda _m, a, kw, i=i: hook(i, a, kw), with_kwargs=True)
               for i, b in enumerate(blocks)]
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            for row in tokens:
                try:
                    model(input_ids=row[None].to(device), use_cache=False)
                except _Captured:
                    pass
    finally:
        for h in handles:
            h.remove()
    return inputs, kwargs


CHUNK = 4  # calibration windows per block call; the captured kwargs broadcast over it


def _run_block(block, inputs, kwargs, hooks_on_first: int = 0, make_hooks=None,
               keep_outputs: bool = True):
    """Run a block over all samples, CHUNK windows per call; make_hooks() installs hooks for
    the calls that cover the first `hooks_on_first` samples only. A hook may raise _Stop to
    end a call early when its outputs are not needed (keep_outputs=False)."""
    outs = []
    with torch.no_grad():
        for j in range(0, len(inputs), CHUNK):
            handles = make_hooks() if make_hooks and j < hooks_on_first else []
            try:
                out = block(torch.cat(inputs[j:j + CHUNK]), **kwargs)
            except _Stop:
                continue
            finally:
                for h in handles:
                    h.remove()
            if keep_outputs:
                outs.extend((out[0] if isinstance(out, tuple) else out).split(1))
    return outs


class _Stop(Exception):
    pass


ERROR_SAMPLES = 4  # calibration windows on which reconstruction error is measured


def walk_layers(model, inputs: list[torch.Tensor], kwargs: list[dict],
                collect: Callable[[torch.nn.Module], object],
                compress_layers: Callable[[list[str], list[torch.nn.Module], object], list[dict]]) -> dict:
    """Compress every decoder block in turn on calibration activations.

    collect(linear) makes a collector whose add_batch(x) sees the linear's inputs; linears fed
    the same tensor (q/k/v, gate/up) share one collector. compress_layers(names, linears,
    collector) edits the weights of the linears sharing that collector in place and returns
    their stats. Each layer's stats gain `error`:
    ||W X - W' X|| / ||W X|| on the first ERROR_SAMPLES windows. Returns {layer name: stats}.
    """
    report = {}
    for (block, linears), block_kwargs in zip(block_linears(model), kwargs, strict=True):
        collectors = _collect(block, linears, inputs, block_kwargs, collect)
        dense = {name: weight_matrix(m).clone() for name, m in linears.items()}
        shared: dict[int, tuple[object, list[str]]] = {}
        for name, c in collectors.items():
            shared.setdefault(id(c), (c, []))[1].append(name)
        for c, names in shared.values():
            report.update(zip(names, compress_layers(names, [linears[n] for n in names], c)))
        errors = {name: [0.0, 0.0] for name in linears}

        def error_hooks():
            return [m.register_forward_hook(
                lambda _m, args, out, name=name, m=m: _add_error(errors[name], args[0], out,
                                                                 dense[name], m.bias))
                for name, m in linears.items()]

        inputs = _run_block(block, inputs, block_kwargs, ERROR_SAMPLES, error_hooks)
        for name, (diff, base) in errors.items():
            report[name]["error"] = math.sqrt(diff / base) if base > 0 else 0.0
    return report


def _collect(block, linears, inputs, kwargs, collect) -> dict:
    """One pass over the block with hooks; returns {name: collector}, shared by input.

    Only the linears' inputs are needed, so every call stops at the input of the last linear
    to run (saving e.g. down_proj), known once all of them have been seen."""
    owner: dict[str, str] = {}
    collectors: dict[str, object] = {}
    seen: list[tuple[torch.Tensor, str]] = []  # inputs of this forward, kept alive for `is`
    order: list[str] = []

    def hook(name, x):
        if name not in owner:  # the first call decides which linears share an input
            owner[name] = next((n for t, n in seen if t is x), name)
            seen.append((x, name))
            order.append(name)
            if owner[name] == name:
                collectors[name] = collect(linears[name])
        if owner[name] == name:
            collectors[name].add_batch(x.detach())
        if len(order) == len(linears) and name == order[-1]:
            seen.clear()
            raise _Stop

    def make_hooks():
        return [m.register_forward_pre_hook(lambda _m, args, name=name: hook(name, args[0]))
                for name, m in linears.items()]

    _run_block(block, inputs, kwargs, len(inputs), make_hooks, keep_outputs=False)
    seen.clear()
    return {name: collectors[owner[name]] for name in linears}


def _add_error(acc: list, x: torch.Tensor, out: torch.Tensor, dense: torch.Tensor,
               bias: torch.Tensor | None) -> None:
    """Accumulate ||W X - W' X||^2 and ||W X||^2; W' X is the compressed layer's output."""
    x = x.reshape(-1, x.shape[-1]).float()
    ref = x @ dense.float().T
    comp = out.reshape(ref.shape).float() - (0 if bias is None else bias.float())
    acc[0] += torch.linalg.matrix_norm(ref - comp).item() ** 2
    acc[1] += torch.linalg.matrix_norm(ref).item() ** 2


@dataclass
class Calibration:
    """Tokens and first-block inputs: independent of the level, so one serves a whole sweep.

    The inputs are captured on first use, from the model as it is then (dense)."""

    spec: CalibrationSpec
    tokens: torch.Tensor
    hash: str
    inputs: list[torch.Tensor] | None = None
    kwargs: list[dict] | None = None  # per decoder block

    def captured(self, model) -> "Calibration":
        if self.inputs is None:
            self.inputs, self.kwargs = capture_block_inputs(model, self.tokens)
        return self


def prepare(tokenizer, spec: CalibrationSpec) -> Calibration:
    """Tokenize and cut the windows (cheap); block inputs are captured on first use."""
    tokens = calibration_tokens(tokenizer, spec)
    return Calibration(spec, tokens, tokens_hash(tokens))


def layerwise(collector: Callable[[int], object], compress_group: Callable, stacked: bool = False):
    """The apply() of a method that needs activations (the registry's contract).

    collector(input width) gathers statistics of a linear's inputs (add_batch(x));
    compress_group(weights, stats, spec) edits one [out, in] weight view in place and returns
    its stats; with stacked=True it takes every weight fed the same input at once (a list,
    and a list of stats back). Layer-wise allocations reach it through layer_spec(name)."""

    def apply(model, spec, calibration: Calibration, layer_spec: Callable = None) -> dict:
        calibration.captured(model)
        spec_of = layer_spec or (lambda _name: spec)

        def compress_layers(names, modules, stats):
            ws = [weight_matrix(m) for m in modules]
            if stacked:
                return compress_group(ws, stats, spec_of(names[0]))
            return [compress_group(w, stats, spec_of(n)) for n, w in zip(names, ws)]

        return walk_layers(model, calibration.inputs, calibration.kwargs,
                           collect=lambda m: collector(weight_matrix(m).shape[1]),
                           compress_layers=compress_layers)

    return apply
