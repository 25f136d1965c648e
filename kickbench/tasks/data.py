"""Reading task data: local JSONL files, or Hugging Face datasets when a hub is reachable."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

PROJECT_DATA = Path(__file__).resolve().parents[2] / "data"
LOCAL_SUFFIXES = (".jsonl", ".json", ".txt", ".raw")


def read_jsonl(path: str | Path) -> list[dict]:
    return [row for _, row in read_jsonl_numbered(path)]


def read_jsonl_numbered(path: str | Path) -> list[tuple[int, dict]]:
    """(line number, object) for every non-blank line; a line that is not valid JSON, not a
    JSON object or not UTF-8 is refused with its line number."""
    rows = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError(f"{path}:{lineno}: not UTF-8 text") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object ({{...}}) per line, "
                                 f"got {type(row).__name__} {shown(row)}")
            rows.append((lineno, row))
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
    local = path.suffix in LOCAL_SUFFIXES or path.exists()
    if not local:
        return load_hub(str(source))
    return [row for _, row in read_local_numbered(path, what)]


def read_local_numbered(path: str | Path, what: str) -> list[tuple[int, dict]]:
    """(line number, row) of a local file as read_rows reads it (a text file is one row, line 1)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    if path.suffix in (".jsonl", ".json"):
        return read_jsonl_numbered(path)
    try:
        return [(1, {"text": path.read_text(encoding="utf-8")})]
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start})") from None


def load_items(source, what: str, adapt, fields: tuple[str, ...]) -> list[dict]:
    """Rows of `source` mapped to a task's schema by adapt(row, index), required fields checked."""
    items = [adapt(row, i) for i, row in enumerate(read_rows(source, what))]
    require_fields(items, fields, str(source))
    return items


def items_hash(items: list[dict]) -> str:
    """Content hash of the items as the task sees them (after any adaptation)."""
    blob = json.dumps(items, sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# What a field of an adapted item must hold, by its name (the same across tasks).
FIELD_TYPES = {"question": "str", "context": "str", "document": "str", "reference": "str",
               "subject": "str", "text": "str", "answers": "strings", "choices": "strings",
               "turns": "strings"}


def shown(value, limit: int = 40) -> str:
    """A value as a message shows it: repr, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def type_problem(field: str, value) -> str | None:
    """Why `value` cannot be the field `field` (FIELD_TYPES), or None when it can."""
    kind = FIELD_TYPES.get(field)
    if kind == "str" and not isinstance(value, str):
        return f"field '{field}' must be a string, got {type(value).__name__} {shown(value)}"
    if kind == "strings" and not (isinstance(value, list)
                                  and all(isinstance(v, str) for v in value)):
        bad = type(value).__name__ if not isinstance(value, list) else \
            "list holding " + next(type(v).__name__ for v in value if not isinstance(v, str))
        return f"field '{field}' must be a list of strings, got {bad} {shown(value)}"
    return None


def require_fields(items: list[dict], fields: tuple[str, ...], source: str) -> None:
    """Every item has every field, non-empty and of its type (FIELD_TYPES)."""
    for i, item in enumerate(items):
        missing = [f for f in fields if not item.get(f)]
        if missing:
            raise ValueError(f"{source}: item {i} lacks field(s) {missing} (or they are empty); "
                             f"required: {list(fields)}")
        for f in fields:
            if problem := type_problem(f, item[f]):
                raise ValueError(f"{source}: item {i}: {problem}")
