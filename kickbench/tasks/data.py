"""Reading task data: local JSONL files, or Hugging Face datasets when a hub is reachable."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

PROJECT_DATA = Path(__file__).resolve().parents[2] / "data"


def read_jsonl(path: str | Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
    return rows


def load_hub(dataset_id: str) -> list[dict]:
    """`id[:config][@split]` through `datasets` (downloads into the HF cache; needs a hub)."""
    from datasets import load_dataset

    name, _, split = dataset_id.partition("@")
    name, _, config = name.partition(":")
    print(f"kickbench: loading dataset {name!r} config={config or None} split={split or 'test'} "
          "from the Hugging Face hub into its cache", flush=True)
    return list(load_dataset(name, config or None, split=split or "test"))


def read_rows(source: str | Path, what: str) -> list[dict]:
    """Rows of a local file or a hub dataset: .jsonl/.json -> its objects; any other existing
    file (.txt, WikiText's .raw) -> one row {"text": content}; otherwise a hub dataset id.
    `what` names the data in the error for a missing file."""
    path = Path(source).expanduser()
    local = path.suffix in (".jsonl", ".json", ".txt", ".raw") or path.exists()
    if not local:
        return load_hub(str(source))
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    if path.suffix in (".jsonl", ".json"):
        return read_jsonl(path)
    return [{"text": path.read_text(encoding="utf-8")}]


def load_items(source, what: str, adapt, fields: tuple[str, ...]) -> list[dict]:
    """Rows of `source` mapped to a task's schema by adapt(row, index), required fields checked."""
    items = [adapt(row, i) for i, row in enumerate(read_rows(source, what))]
    require_fields(items, fields, str(source))
    return items


def items_hash(items: list[dict]) -> str:
    """Content hash of the items as the task sees them (after any adaptation)."""
    blob = json.dumps(items, sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def require_fields(items: list[dict], fields: tuple[str, ...], source: str) -> None:
    for i, item in enumerate(items):
        missing = [f for f in fields if not item.get(f)]
        if missing:
            raise ValueError(f"{source}: item {i} lacks field(s) {missing} (or they are empty); "
                             f"required: {list(fields)}")
