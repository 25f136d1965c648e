"""bitsandbytes LLM.int8 and 4-bit NF4/FP4, applied by loading the model through
transformers' BitsAndBytesConfig (bitsandbytes quantizes at load time, not in place).

bitsandbytes cannot read a GGUF file: the built-in model loads from its cached safetensors
copy. Arithmetic is real int8 / 4-bit kernels, not fake quantization.
"""

from __future__ import annotations

import logging
import math

import torch

from .registry import Method, register
from .spec import CompressionSpec

VERSION = 1  # bump when a change can alter this compressor's numbers (kickbench/versions.py)

BITS = {"bnb-int8": 8, "bnb-nf4": 4, "bnb-fp4": 4}
BLOCK = 64           # bitsandbytes 4-bit: one absmax per 64 weights
DQ_BLOCK = 256       # double quantization: absmax in 8 bits, one fp32 scale per 256 of them


def available() -> tuple[bool, str]:
    """(usable, why not): bitsandbytes imports and has a native library for this machine."""
    try:
        import bitsandbytes  # noqa: F401
        from bitsandbytes.cextension import lib
    except Exception as e:  # an ImportError or a missing native library
        return False, f"bitsandbytes cannot load: {type(e).__name__}: {e}"
    if lib is None or type(lib).__name__ == "ErrorHandlerMockBNBNativeLibrary":
        return False, "bitsandbytes has no native library for this machine"
    # LLM.int8 casts fp32/bf16 activations to fp16 and logs it on every matmul; the report
    # says it once (`arithmetic`).
    logging.getLogger("bitsandbytes.autograd._functions").addFilter(_quiet)  # added once
    return True, ""


def _quiet(record: logging.LogRecord) -> bool:
    return "inputs will be cast" not in record.getMessage()


def config(spec: CompressionSpec, dtype: torch.dtype):
    """The transformers quantization config for a bnb-* spec; compute runs in `dtype`."""
    from transformers import BitsAndBytesConfig

    if spec.method not in BITS:
        raise ValueError(f"{spec.method!r} is not a bitsandbytes method ({', '.join(BITS)})")
    if spec.method == "bnb-int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=spec.method[4:],
                              bnb_4bit_use_double_quant=spec.double_quant,
                              bnb_4bit_compute_dtype=dtype)


def footprint(model: torch.nn.Module) -> int:
    """Bytes of the loaded model's parameters and buffers (packed 4-bit weights as stored)."""
    return model.get_memory_footprint()


def arithmetic(spec: CompressionSpec, lm) -> str:
    """What the evaluation computes with, for reports."""
    dtype = str(lm.dtype).replace("torch.", "")
    if spec.method == "bnb-int8":  # bitsandbytes casts activations to fp16 for int8 matmul
        return "bitsandbytes LLM.int8 kernels (fp16 activations, outliers above 6.0 in fp16)"
    return f"bitsandbytes {spec.method[4:]} kernels, weights dequantized to {dtype} per matmul"


def check(spec: CompressionSpec) -> dict:
    """Bits are implied by the kind; double quantization exists for the 4-bit kinds."""
    implied = BITS[spec.method]
    if spec.bits not in (None, implied):
        raise ValueError(f"{spec.method} is {implied}-bit, got bits={spec.bits!r}")
    if spec.double_quant and implied == 8:
        raise ValueError("double_quant applies to bnb-nf4 and bnb-fp4 only")
    return {"bits": implied}


def layer_bits(spec: CompressionSpec, w: torch.Tensor) -> int:
    """bitsandbytes' own layout of one [out, in] matrix."""
    rows, cols = w.shape
    if spec.method == "bnb-int8":
        return rows * cols * 8 + rows * 32  # int8 codes + an fp32 scale per row (SCB)
    blocks = math.ceil(rows * cols / BLOCK)
    absmax = blocks * 8 + math.ceil(blocks / DQ_BLOCK) * 32 + 32 if spec.double_quant \
        else blocks * 32
    return rows * cols * 4 + absmax


for _name, _text in (("bnb-int8", "bitsandbytes LLM.int8 (int8 with fp16 outliers)"),
                     ("bnb-nf4", "bitsandbytes 4-bit NormalFloat"),
                     ("bnb-fp4", "bitsandbytes 4-bit float")):
    register(Method(_name, "quantization", "fixed", _text, load_config=config,
                    fields=("bits", "double_quant"), check=check, size_bits=layer_bits,
                    label=lambda s: " ".join(filter(None, [s.method, "dq" if s.double_quant else ""])),
                    setting=lambda s: "double quant" if s.double_quant else "",
                    note=arithmetic, available=available))
