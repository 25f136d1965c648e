import pytest
import torch

from kickbench import compress, models
from kickbench.compress.layers import target_linears, weight_matrix
from kickbench.compress.spec import CompressionSpec

FAMILIES = list(models.TINY_CONFIGS)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("spec", [CompressionSpec("magnitude", 0.3),
                                  CompressionSpec("magnitude", pattern="2:4")])
def test_sparsity_achieved_per_layer_and_restored(tiny, family, spec):
    lm = tiny(family)
    before = models.weights_fingerprint(lm.model)
    emb = lm.model.get_input_embeddings().weight.detach().clone()
    with compress.applied(lm.model, spec) as report:
        layers = target_linears(lm.model)
        assert len(report["layers"]) == len(layers) >= 8
        for name, module in layers:
            w = weight_matrix(module)
            zeros = (w == 0).float().mean().item()
            assert zeros == pytest.approx(spec.sparsity, abs=1 / w.shape[1])
            assert report["layers"][name]["sparsity"] == pytest.approx(spec.sparsity, abs=1 / w.shape[1])
            if spec.nm:  # every group of 4 inputs keeps exactly 2
                assert ((w.reshape(-1, 4) != 0).sum(dim=1) <= 2).all()
        assert report["sparsity"] == pytest.approx(spec.sparsity, abs=0.01)
        # embeddings (tied to lm_head in llama/qwen2/gpt2/opt here) are never pruned
        assert torch.equal(lm.model.get_input_embeddings().weight, emb)
        assert models.weights_fingerprint(lm.model) != before
    assert models.weights_fingerprint(lm.model) == before


def test_gpt2_conv1d_groups_run_along_the_input(tiny):
    lm = tiny("tiny-gpt2")
    with compress.applied(lm.model, CompressionSpec("magnitude", pattern="2:4")):
        name, module = next((n, m) for n, m in target_linears(lm.model) if "c_attn" in n)
        w = module.weight.data  # Conv1D stores [in, out]; groups are along `in`
        assert ((w.t().reshape(-1, 4) != 0).sum(dim=1) == 2).all()


def test_weight_stats_count_pruned_zeros(tiny):
    lm = tiny("tiny-llama")
    dense = models.weight_stats(lm.model)
    with compress.applied(lm.model, CompressionSpec("magnitude", 0.5)):
        pruned = models.weight_stats(lm.model)
    target = sum(weight_matrix(m).numel() for _, m in target_linears(lm.model))
    assert pruned["params"] == dense["params"]
    assert dense["nonzero"] - pruned["nonzero"] == pytest.approx(target / 2, abs=target * 0.01)
