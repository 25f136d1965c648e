"""bitsandbytes LLM.int8 and 4-bit NF4/FP4, applied by loading the model through
transformers' BitsAndBytesConfig (bitsandbytes quantizes at load time, not in place).

bitsandbytes cannot read a GGUF file: the built-in model loads from its cached safetensors
copy. Arithmetic is real int8 / 4-bit kernels, not fake quantization.
"""

from __future__ import annotations

import logging

import torch

from .spec import BNB, CompressionSpec


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

    if spec.method not in BNB:
        raise ValueError(f"{spec.method!r} is not a bitsandbytes method ({', '.join(BNB)})")
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
