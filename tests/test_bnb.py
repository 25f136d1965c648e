"""bitsandbytes LLM.int8 and NF4/FP4 on a tiny model, on CPU."""

import pytest
import torch

from kickbench import compress, models, sweep
from kickbench.compress import bnb
from kickbench.compress.layers import target_linears, weight_matrix
from kickbench.compress.spec import CompressionSpec
from kickbench.session import Session

OK, WHY = bnb.available()
pytestmark = pytest.mark.skipif(not OK, reason=WHY)
if not OK:
    print(f"bitsandbytes tests skipped: {WHY}")


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, tiny):
    """bitsandbytes loads from safetensors: the tiny Llama saved as a folder."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    lm = tiny("tiny-llama")
    lm.model.save_pretrained(folder)
    lm.tokenizer.save_pretrained(folder)
    return models.load(str(folder), device="cpu", dtype="float32")


@pytest.mark.parametrize("spec, bits, max_rel_err", [
    (CompressionSpec("bnb-int8"), 8, 0.05),
    (CompressionSpec("bnb-nf4"), 4, 0.3),
    (CompressionSpec("bnb-nf4", double_quant=True), 4, 0.3),
    (CompressionSpec("bnb-fp4"), 4, 0.4),
])
def test_bnb_loads_quantized_and_its_footprint_is_the_packed_codes(tiny_folder, spec, bits,
                                                                    max_rel_err):
    ids = torch.tensor([[1, 5, 9, 200, 7, 31]])
    with torch.no_grad():
        ref = tiny_folder.model(input_ids=ids).logits
    n_lin = sum(weight_matrix(m).numel() for _, m in target_linears(tiny_folder.model))
    dense_bytes = tiny_folder.model.get_memory_footprint()
    with compress.compressed(tiny_folder, spec) as (qlm, report):
        kinds = {type(m).__name__ for n, m in qlm.model.named_modules() if n.endswith("q_proj")}
        assert kinds == {"Linear8bitLt" if bits == 8 else "Linear4bit"}
        # fp32 linears replaced by packed codes; quantization statistics live outside parameters
        assert report["loaded_bytes"] == dense_bytes - n_lin * 4 + n_lin * bits // 8
        with torch.no_grad():
            out = qlm.model(input_ids=ids).logits
        err = ((out - ref).norm() / ref.norm()).item()
        assert 0 < err < max_rel_err
        assert report["size"]["size_fraction"] < 1 and "bitsandbytes" in report["arithmetic"]


def test_bnb_in_a_sweep_is_stored_with_its_size(tiny_folder, store, tmp_path):
    data = tmp_path / "qa.jsonl"
    data.write_text('{"question": "Capital of France?", "answers": ["Paris"]}\n' * 3)
    runs = sweep.plan([tiny_folder.name], [CompressionSpec("dense"), CompressionSpec("bnb-nf4")],
                      [sweep.TaskSpec("factoid", data=str(data))])
    session = Session()
    session.add_model(tiny_folder, "cpu", "float32")
    frame = sweep.execute(runs, store, sweep.Settings(device="cpu", dtype="float32", progress=False),
                          session)
    row = frame[(frame.method == "bnb-nf4") & (frame.metric == "accuracy")].iloc[0]
    assert row.family == "quantization" and 0.9 < row.size_fraction < 1
    assert store.run(row.key)["meta"]["compression"]["loaded_bytes"] > 0


def test_bnb_needs_a_safetensors_folder(tiny):
    with pytest.raises(ValueError, match="no local safetensors folder"):
        with compress.compressed(tiny("tiny-llama"), CompressionSpec("bnb-int8")):
            pass
