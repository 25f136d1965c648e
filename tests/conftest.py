from pathlib import Path

import pytest
import torch

from kickbench import models, sweep
from kickbench.compress import calibration as calib

C4 = Path(__file__).resolve().parents[2] / "shared" / "data" / "c4_sample" / "c4_sample_1000.jsonl"

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny():
    """Session-wide tiny models (fp32); tests that compress restore weights via applied()."""
    cache = {}

    def get(name="tiny-llama"):
        if name not in cache:
            cache[name] = models.load(name, device="cpu", dtype="float32")
        return cache[name]

    return get


@pytest.fixture
def store(tmp_path):
    from kickbench.store import Store

    s = Store(tmp_path / "results.sqlite")
    yield s
    s.close()


@pytest.fixture(scope="session")
def c4_spec(tmp_path_factory):
    """The first 40 documents of the shared C4 sample (tokenizing all 2 MB per test is slow)."""
    if not C4.exists():
        pytest.skip(f"{C4} not present")
    head = tmp_path_factory.mktemp("c4") / "c4_head.jsonl"
    head.write_text("".join(C4.read_text().splitlines(keepends=True)[:40]))
    return calib.CalibrationSpec(str(head), nsamples=4, seqlen=64, seed=0)
