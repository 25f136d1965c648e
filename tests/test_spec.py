import pytest

from kickbench import compress
from kickbench.compress.spec import CompressionSpec


@pytest.mark.parametrize("kwargs, message", [
    (dict(method="magnitude", sparsity=1.0), "sparsity must be in [0, 1)"),
    (dict(method="magnitude", sparsity=-0.1), "sparsity must be in [0, 1)"),
    (dict(method="magnitude", pattern="4:4"), "0 < N < M"),
    (dict(method="magnitude", pattern="5:4"), "0 < N < M"),
    (dict(method="magnitude", pattern="2-4"), "'unstructured' or 'N:M'"),
    (dict(method="magnitude", pattern="2:4", sparsity=0.3), "implies sparsity 0.5"),
    (dict(method="dense", sparsity=0.3), "takes no sparsity"),
])
def test_bad_specs_fail_with_a_clear_message(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace(")", r"\)")):
        CompressionSpec(**kwargs)


def test_nm_pattern_sets_sparsity():
    spec = CompressionSpec("magnitude", pattern="2:4")
    assert spec.nm == (2, 4) and spec.sparsity == 0.5
    assert CompressionSpec("magnitude", pattern="4:8", sparsity=0.5).label == "magnitude 4:8"


def test_zero_sparsity_is_the_dense_model():
    assert CompressionSpec("magnitude", 0.0).canonical() == CompressionSpec("dense")
    assert CompressionSpec("magnitude", 0.3).canonical().method == "magnitude"


def test_unknown_method_lists_the_available_ones():
    with pytest.raises(ValueError, match="unknown compression method 'foo'.*magnitude"):
        compress.check(CompressionSpec("foo", 0.5))


def test_nm_width_checked_against_the_model(tiny):
    lm = tiny("tiny-llama")  # widths 64 and 128
    with pytest.raises(ValueError, match="not a multiple of 48"):
        compress.check(CompressionSpec("magnitude", pattern="2:48"), lm.model)
