"""The compressor contract: stored keys of earlier methods unchanged, specs refuse what their
method does not take, and a method added from a test file alone runs like a built-in one."""

import pytest

from kickbench import compress, config
from kickbench.compress import registry
from kickbench.compress.calibration import CalibrationSpec
from kickbench.compress.spec import CompressionSpec
from kickbench.store import result_key

# result_key(spec.key()) as computed before the registry existed (users' stores stay valid)
PINNED = [
    (CompressionSpec("magnitude", 0.5), "165a21ced4470a83aae4"),
    (CompressionSpec("wanda", pattern="2:4", calibration=CalibrationSpec(None, 8, 128)),
     "d80229b85df3c462ed2a"),
    (CompressionSpec("sparsegpt", 0.3, damping=0.05), "3a9258d412a201c84e40"),
    (CompressionSpec("rtn", bits=4), "55d4c85c69415c8afb69"),
    (CompressionSpec("gptq", bits=3, group_size=64, act_order=True, symmetric=True),
     "7ddb65bd9345ca69b5b3"),
    (CompressionSpec("bnb-nf4", double_quant=True), "59e463b2512366fea60d"),
    (CompressionSpec("bnb-int8"), "a77091e96806772dfa8e"),
    (CompressionSpec("dense"), "d521043a49fdbfb2d8a3"),
    (CompressionSpec("rtn", bits=4, group_size=48, partial_groups=True), "2d5dc46133a6cde55e7c"),
]


@pytest.mark.parametrize("spec, key", PINNED, ids=[s.label for s, _ in PINNED])
def test_keys_of_existing_methods_did_not_change(spec, key):
    assert result_key(spec.key()) == key
    assert CompressionSpec.from_key(spec.key()) == spec


def test_a_method_refuses_fields_it_does_not_take():
    with pytest.raises(ValueError, match="method 'magnitude' takes no damping"):
        CompressionSpec("magnitude", 0.5, damping=0.05)
    with pytest.raises(ValueError, match="takes no option 'awq_gridd'"):
        CompressionSpec("rtn", bits=4, options={"awq_gridd": 3})
    with pytest.raises(ValueError, match="unknown compression method 'bogus'"):
        CompressionSpec("bogus")  # at sparsity 0 too: never silently the dense model
    with pytest.raises(ValueError, match="unknown layer-wise allocation 'nope'"):
        CompressionSpec("wanda", 0.5, layerwise="nope")


def test_every_method_declares_a_family_and_a_level():
    for m in registry.METHODS.values():
        assert m.family in registry.FAMILIES and m.level in registry.LEVELS
    assert registry.names("pruning")[:3] == ["magnitude", "wanda", "sparsegpt"]
    assert {"rtn", "gptq", "bnb-int8"} <= set(registry.names("quantization"))


def test_grid_gives_each_method_its_levels_and_options():
    specs = config.grid(["wanda", "rtn", "bnb-int8"], [0.3], ["2:4"], [4],
                        calibration_spec=CalibrationSpec(None, 4, 32))
    assert [s.label for s in specs] == ["dense", "wanda 30%", "wanda 2:4", "rtn w4 per-channel",
                                        "bnb-int8"]
    assert specs[1].calibration == CalibrationSpec(None, 4, 32) and specs[3].calibration is None
    with pytest.raises(ValueError, match="option 'zzz' applies to no chosen method"):
        config.grid(["wanda"], [0.3], options={"zzz": 1})


def scale_half(model, spec, calibration=None, layer_spec=None):
    """A toy quantizer: every weight halved, then rounded to spec.bits fractional bits."""
    from kickbench.compress.layers import target_linears, weight_matrix

    out = {}
    for name, module in target_linears(model):
        w = weight_matrix(module)
        step = 2.0 ** -spec.option("toy_shift")
        w.copy_((w / 2 / step).round() * step)
        out[name] = {"bits": spec.bits}
    return out


@pytest.fixture
def toy_method(monkeypatch):
    from kickbench.compress.spec import GRID_FIELDS, check_grid

    entry = registry.Method("toy-half", "quantization", "bits", "halves every weight",
                            apply=scale_half, fields=GRID_FIELDS, check=check_grid,
                            options=(registry.Option("toy_shift", 6, "fractional bits"),))
    monkeypatch.setitem(registry.METHODS, entry.name, entry)
    return entry


def test_a_method_registered_in_a_test_compresses_through_apply(tiny, toy_method):
    lm = tiny("tiny-llama")
    spec = config.spec("toy-half", bits=4, options={"toy_shift": 3})
    assert spec.key()["options"] == {"toy_shift": 3} and spec.label == "toy-half w4 per-channel"
    with compress.applied(lm.model, spec) as report:
        assert report["layers"] and report["size"]["bits_per_weight"] > 4
        assert "fake quantization" in report["arithmetic"]
