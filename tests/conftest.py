import pytest
import torch

from kickbench import models, sweep

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


@pytest.fixture(autouse=True)
def _fresh_item_cache():
    sweep._ITEMS.clear()
    yield
