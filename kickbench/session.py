"""A run's working state with an explicit lifetime: loaded models, task items, calibration
windows (with their captured activations) and perplexity windows.

A Session keeps at most `max_models` models; loading another frees the least recently used one
with everything derived from it. `close()` (or leaving a `with` block) frees it all. Nothing
here is module-level: drop the session and the memory goes with it.
"""

from __future__ import annotations

import gc
import shutil
import tempfile
from collections import OrderedDict
from pathlib import Path

from . import compress, models
from .compress import calibration
from .compress.spec import CompressionSpec
from .tasks import TaskSpec
from .tasks.data import items_hash


class Session:
    def __init__(self, max_models: int = 1):
        if max_models < 1:
            raise ValueError(f"max_models must be >= 1, got {max_models}")
        self.max_models = max_models
        self._models: OrderedDict[tuple, models.LoadedModel] = OrderedDict()
        self._items: dict[TaskSpec, tuple[list[dict], str]] = {}
        self._calibrations: dict[tuple, calibration.Calibration] = {}
        self._windows: dict[tuple, list[dict]] = {}
        self._dense: dict[tuple, Path] = {}  # dense next-token distributions (divergence.py)
        self._scratch: Path | None = None

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def model(self, name: str, device=None, dtype=None) -> models.LoadedModel:
        """Load once per session (the dense weights are restored after every compression)."""
        key = (name, str(device), str(dtype))
        if key not in self._models:
            while len(self._models) >= self.max_models:
                self._evict(next(iter(self._models)))
            self._models[key] = models.load(name, device=device, dtype=dtype)
        self._models.move_to_end(key)
        return self._models[key]

    def add_model(self, lm: models.LoadedModel, device=None, dtype=None) -> None:
        """Use an already loaded model under its name (e.g. one a test built)."""
        self._models[(lm.name, str(device), str(dtype))] = lm

    def items(self, task: TaskSpec) -> tuple[list[dict], str]:
        """A task's items and their content hash (read once per session)."""
        if task not in self._items:
            items = task.module.load(task.data)
            self._items[task] = items, items_hash(items)
        return self._items[task]

    def calibration(self, lm: models.LoadedModel, spec: CompressionSpec) -> calibration.Calibration | None:
        """Calibration windows per (model, calibration spec): shared by every level of a sweep."""
        cspec = compress.calibration_spec(spec)
        if cspec is None:
            return None
        key = (lm.fingerprint, cspec)
        if key not in self._calibrations:
            self._calibrations[key] = calibration.prepare(lm.tokenizer, cspec)
        return self._calibrations[key]

    def windows(self, lm: models.LoadedModel, task: TaskSpec, window: int) -> list[dict]:
        """Token windows of a rolling task for this model's tokenizer."""
        key = (lm.name, task, window)
        if key not in self._windows:
            wins = task.module.windows(lm.tokenizer, self.items(task)[0], window, task.stride)
            self._windows[key] = [{"id": f"window-{i}", **w} for i, w in enumerate(wins)]
        return self._windows[key]

    def dense_distributions(self, lm: models.LoadedModel, task: TaskSpec, ctxs: list[list[int]],
                            batch_size: int) -> Path:
        """The .npy file of the dense model's next-token distributions at the end of each
        context (divergence.write_dense), computed once per (model, task, contexts) while the
        dense weights are in place; the files live in this session's scratch folder."""
        from . import divergence

        key = (lm.fingerprint, str(lm.device), task, divergence.contexts_hash(ctxs))
        if key not in self._dense:
            if self._scratch is None:
                self._scratch = Path(tempfile.mkdtemp(prefix="kickbench-dense-"))
            path = self._scratch / f"dense-{len(self._dense)}.npy"
            pad_id = lm.tokenizer.pad_token_id or 0
            divergence.write_dense(path, lm.model, ctxs, pad_id, batch_size)
            self._dense[key] = path
        return self._dense[key]

    def loaded(self) -> list[str]:
        return [name for name, _, _ in self._models]

    def _evict(self, key: tuple) -> None:
        lm = self._models.pop(key)
        self._calibrations = {k: v for k, v in self._calibrations.items() if k[0] != lm.fingerprint}
        self._windows = {k: v for k, v in self._windows.items() if k[0] != lm.name}
        for k in [k for k in self._dense if k[0] == lm.fingerprint]:
            self._dense.pop(k).unlink(missing_ok=True)
        del lm
        gc.collect()

    def close(self) -> None:
        """Free every model, item set, calibration and window of the session."""
        for key in list(self._models):
            self._evict(key)
        self._items.clear()
        self._calibrations.clear()
        self._windows.clear()
        self._dense.clear()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
