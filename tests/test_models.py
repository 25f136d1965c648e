import pytest
import torch

from kickbench import models


def test_unknown_name_lists_builtins_before_loading_anything():
    with pytest.raises(ValueError, match="unknown model 'smollm3'.*smollm2-135m.*tiny-llama"):
        models.load("smollm3")
    with pytest.raises(FileNotFoundError, match="GGUF file not found"):
        models.load("missing.gguf")


def test_tiny_models_are_deterministic_and_fingerprinted(tiny):
    a = tiny("tiny-qwen2")
    b = models.load("tiny-qwen2", device="cpu", dtype="float32")
    assert a.fingerprint == b.fingerprint
    assert models.load("tiny-qwen2", device="cpu", dtype="bfloat16").fingerprint != a.fingerprint
    stats = models.weight_stats(a.model)
    assert stats["bytes"] == stats["params"] * 4
    assert 0 < stats["nonzero"] <= stats["params"]


def test_fingerprint_sees_a_single_changed_weight(tiny):
    lm = models.load("tiny-llama", device="cpu", dtype="float32")
    before = lm.fingerprint
    with torch.no_grad():
        next(lm.model.parameters()).view(-1)[0] += 1
    assert models.weights_fingerprint(lm.model) != before


def test_default_dtype_is_one_per_device_type_whatever_the_cpu_flags(monkeypatch):
    """Issue 16: the same command gives the same numbers on two machines of one kind."""
    for native in (False, True):
        monkeypatch.setattr(models, "cpu_has_native_bf16", lambda native=native: native)
        assert models.default_dtype(torch.device("cpu")) == torch.float32
    assert models.default_dtype(torch.device("cuda")) == torch.bfloat16
