"""Versions of the code that makes numbers, and the check that they move when the code does.

A result's key (sweep.run_key) holds the versions of the components that produced it and of no
others, e.g. {"task": 2, "engine": 1, "stats": 1, "compressor": {"wanda": 1}}: a change to
GPTQ does not invalidate Wanda's results, a change to a scorer invalidates that task's.

Components and where their version lives:

- task:<name>      VERSION in kickbench/tasks/<task>.py; sources: that file and the tasks/
                   helpers it imports (text.py, data.py, ...). tasks/metrics.py is not a source:
                   it names metrics; how each aggregates is part of the key itself.
- compressor:<m>   VERSION in the method's own file (kickbench/compress/<m>.py; a file without
                   one is version 1); sources: that file, the compress/ helpers it imports
                   (masks, quant, hessian, obs, calibration, ...), layers.py, size.py and
                   compress/__init__.py's apply/applied/compressed. The registry and spec.py
                   are not sources (the spec's key is in the result key). Allocators (OWL) too.
- engine, stats, fluency   ENGINE, STATS, FLUENCY below.
- judge            PROTOCOL_VERSION in kickbench/judge/__init__.py (in the judge's own key);
                   sources: JUDGE_SOURCES below.

What counts as a change: the source's tokens, without comments, docstrings, blank lines,
indentation width, line wrapping inside brackets or the VERSION line itself. A source is a
whole file, or `file.py:name` for one top-level definition of a file that does much else
(sweep.py, posthoc.py, compress/__init__.py).

tests/component_hashes.json records (component, version) -> hash of its sources (and each
source's own hash, so a failure names the file). tests/test_versions.py fails when a
component's hash differs from the one recorded for its version. After a change:

- it can change a number: bump the version, then `python -m kickbench.versions --record`;
- it cannot (a message, validation, a refactoring): `python -m kickbench.versions --record
  --same-numbers <component>` keeps the version and re-records its hash; that line in the
  JSON diff is the reviewable claim "no number changed".

--record never overwrites a recorded version's hash without --same-numbers.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import sys
import tokenize
from dataclasses import dataclass
from pathlib import Path

KEY_SCHEME = 2  # 1: kickbench.__version__ + task VERSION (before per-component versions)

ENGINE = 3   # engine.py (decoding, log-likelihood, rolling NLL), runners.py, sweep.requests
STATS = 2    # stats.py (aggregates, bootstrap intervals), sweep._score
FLUENCY = 1  # posthoc.fluency (the dense model's perplexity of answers, under the run's key)
DIVERGENCE = 1  # divergence.py, sweep._divergence: KL from dense, kept in the run's provenance

PACKAGE = Path(__file__).resolve().parent
TABLE = PACKAGE.parent / "tests" / "component_hashes.json"
RECORD = "python -m kickbench.versions --record"

FIXED = {  # name: (the constant above that holds its version, sources)
    "engine": ("ENGINE", ("engine.py", "runners.py", "sweep.py:requests")),
    "stats": ("STATS", ("stats.py", "sweep.py:_score")),
    "fluency": ("FLUENCY", ("posthoc.py:fluency",)),
    # not in result keys (KL is added to stored runs); its version is in the run's provenance
    "divergence": ("DIVERGENCE", ("divergence.py", "sweep.py:_divergence", "sweep.py:_kl_missing")),
}
# judge/http.py is transport: what it sends that shapes a reply is in the judge's identity
JUDGE_SOURCES = ("judge/__init__.py", "judge/expected.py", "judge/local.py", "judge/reference.py",
                 "judge/rubric.py", "posthoc.py:judge_key", "posthoc.py:judge_run")
COMPRESS_BASE = ("compress/__init__.py:apply", "compress/__init__.py:applied",
                 "compress/__init__.py:compressed", "compress/layers.py", "compress/size.py")
NOT_SOURCES = {"tasks": {"__init__.py", "metrics.py"},
               "compress": {"__init__.py", "registry.py", "spec.py"}}
# modules that hold no single method: an entry's home is the first of its callables outside them
SHARED_COMPRESS = {"kickbench.compress", *(f"kickbench.compress.{m}" for m in (
    "registry", "spec", "calibration", "quant", "masks", "hessian", "obs", "layers", "size"))}


@dataclass(frozen=True)
class Component:
    name: str                  # "task:factoid", "compressor:wanda", "engine", ...
    version: int
    sources: tuple[str, ...]   # package-relative paths, "file.py:function" for one definition
    home: str                  # where the version is written

    def digests(self) -> dict[str, str]:
        return {s: source_digest(s) for s in self.sources}

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.digests(), sort_keys=True).encode()).hexdigest()


# -- which versions a result depends on ---------------------------------------------------------

def used(spec, task_module) -> dict:
    """The versions of exactly the components a run of `task_module` under `spec` produces
    numbers with (the `versions` field of its key)."""
    out = {"task": task_module.VERSION, "engine": ENGINE, "stats": STATS}
    if not spec.is_dense:
        names = [spec.method, *([spec.layerwise] if spec.layerwise else [])]
        out["compressor"] = {n: compressor_version(n) for n in names}
    if hasattr(task_module, "fluency_context"):
        out["fluency"] = FLUENCY
    return out


def compressor_version(name: str) -> int:
    """VERSION of the file that registered method or allocator `name` (1 when it has none)."""
    module = entry_module(_entry(name))
    return int(getattr(module, "VERSION", 1)) if module is not None else 1


def _entry(name: str):
    from .compress import registry

    return registry.METHODS[name] if name in registry.METHODS else registry.allocator(name)


def entry_module(entry):
    """The module that registered a method/allocator: the first module, among its callables
    (and what a layerwise() closure holds), that is not a shared compress helper."""
    for fn in _callables(entry):
        name = getattr(fn, "__module__", None)
        module = sys.modules.get(name) if name and name not in SHARED_COMPRESS else None
        if module is not None and getattr(module, "__file__", None):  # not a builtin
            return module
    return None


def _callables(entry):
    for value in vars(entry).values():
        if not callable(value):
            continue
        yield value
        for cell in getattr(value, "__closure__", None) or ():
            try:
                inner = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            if callable(inner):
                yield inner


# -- the components and their sources ------------------------------------------------------------

def components() -> list[Component]:
    """Every component with its version and sources (tasks, registered compressors whose file
    is in this package, engine, stats, fluency, judge)."""
    from . import judge, tasks
    from .compress import registry

    out = [Component(n, int(globals()[const]), s, f"kickbench/versions.py ({const})")
           for n, (const, s) in FIXED.items()]
    for name, module in tasks.TASKS.items():
        rel = _relative(getattr(module, "__file__", None) or "")
        if not rel.startswith("tasks/"):
            continue  # defined outside the package (a test's toy task)
        out.append(Component(f"task:{name}", int(module.VERSION), _with_imports(rel, "tasks"),
                             f"kickbench/{rel} (VERSION)"))
    for entry in [*registry.METHODS.values(), *registry.ALLOCATORS.values()]:
        module = entry_module(entry)
        rel = _relative(getattr(module, "__file__", None) or "")
        if not rel.startswith("compress/"):
            continue  # defined outside the package (a test's toy compressor)
        sources = tuple(dict.fromkeys([*_with_imports(rel, "compress"), *COMPRESS_BASE,
                                       *_with_imports("compress/size.py", "compress")]))
        out.append(Component(f"compressor:{entry.name}", int(getattr(module, "VERSION", 1)),
                             sources, f"kickbench/{rel} (VERSION; add the line if absent)"))
    out.append(Component("judge", int(judge.PROTOCOL_VERSION), JUDGE_SOURCES,
                         "kickbench/judge/__init__.py (PROTOCOL_VERSION)"))
    return sorted(out, key=lambda c: c.name)


def _relative(path: str) -> str:
    try:
        return Path(path).resolve().relative_to(PACKAGE).as_posix()
    except ValueError:
        return ""


def _with_imports(rel: str, package: str) -> tuple[str, ...]:
    """rel and, recursively, the modules of `package` it imports relatively (`from . import x`,
    `from .x import y`), except those in NOT_SOURCES."""
    seen, todo = [], [rel]
    while todo:
        current = todo.pop(0)
        if current in seen:
            continue
        seen.append(current)
        tree = ast.parse((PACKAGE / current).read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or node.level != 1:
                continue
            names = [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
            for name in names:
                path = f"{package}/{name}.py"
                if (PACKAGE / path).is_file() and f"{name}.py" not in NOT_SOURCES[package]:
                    todo.append(path)
    return tuple(seen)


# -- normalised source hashes --------------------------------------------------------------------

def source_digest(source: str) -> str:
    """sha256 of a source's normalised tokens; `file.py:name` hashes one top-level definition."""
    path, _, name = source.partition(":")
    lines = normalised_lines((PACKAGE / path).read_text())
    if name:
        tree = ast.parse((PACKAGE / path).read_text())
        first, last = _span(tree, name, source)
        lines = [(row, text) for row, text in lines if first <= row <= last]
    return hashlib.sha256("\n".join(text for _, text in lines).encode()).hexdigest()


def _span(tree: ast.Module, name: str, source: str) -> tuple[int, int]:
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return min([node.lineno, *(d.lineno for d in node.decorator_list)]), node.end_lineno
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name
                                                for t in node.targets):
            return node.lineno, node.end_lineno
    raise ValueError(f"{source}: no top-level definition {name!r}")


def _ignored_spans(tree: ast.Module) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Docstrings, and module-level VERSION / PROTOCOL_VERSION assignments."""
    spans = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                spans.append(((first.lineno, first.col_offset), (first.end_lineno, first.end_col_offset)))
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] in (
                ["VERSION"], ["PROTOCOL_VERSION"]):
            spans.append(((node.lineno, node.col_offset), (node.end_lineno, node.end_col_offset)))
    return spans


def normalised_lines(text: str) -> list[tuple[int, str]]:
    """(first row, text) per logical line: indentation depth and the line's tokens joined by
    single spaces; comments, blank lines, docstrings and VERSION lines left out. Stable across
    Python versions (3.12's split f-string tokens are joined back into one string)."""
    spans = _ignored_spans(ast.parse(text))
    source_lines = text.splitlines(keepends=True)
    out, parts, row, depth, fstring = [], [], None, 0, []
    fstart = getattr(tokenize, "FSTRING_START", None)
    fend = getattr(tokenize, "FSTRING_END", None)
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if fstart is not None and tok.type == fstart:
            fstring.append(tok.start)
            continue
        if fstring:
            if tok.type == fend:
                start = fstring.pop()
                if not fstring:
                    tok = tok._replace(type=tokenize.STRING, start=start,
                                       string=_text_between(source_lines, start, tok.end))
            if fstring:
                continue
        if tok.type == tokenize.INDENT:
            depth += 1
        elif tok.type == tokenize.DEDENT:
            depth -= 1
        elif tok.type in (tokenize.COMMENT, tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER):
            pass
        elif tok.type == tokenize.NEWLINE:
            if parts:
                out.append((row, "  " * depth + " ".join(parts)))
            parts, row = [], None
        elif not any(a <= tok.start and tok.end <= b for a, b in spans):
            if row is None:
                row = tok.start[0]
            parts.append(tok.string)
    if parts:
        out.append((row, "  " * depth + " ".join(parts)))
    return out


def _text_between(lines: list[str], start: tuple[int, int], end: tuple[int, int]) -> str:
    if start[0] == end[0]:
        return lines[start[0] - 1][start[1]:end[1]]
    return "".join([lines[start[0] - 1][start[1]:], *lines[start[0]:end[0] - 1],
                    lines[end[0] - 1][:end[1]]])


# -- the recorded table --------------------------------------------------------------------------

def load_table(path: Path = TABLE) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def problems(table: dict | None = None, comps: list[Component] | None = None) -> list[str]:
    """What tests/test_versions.py fails on: a component whose code changed while its version
    stayed, a version with no recorded hash, a version lower than one recorded."""
    table = load_table() if table is None else table
    out = []
    for c in comps if comps is not None else components():
        recorded = table.get(c.name, {})
        entry = recorded.get(str(c.version))
        if entry is None:
            higher = [v for v in recorded if int(v) > c.version]
            why = (f"version {c.version} is below the recorded {max(higher, key=int)}" if higher
                   else f"version {c.version} has no recorded hash")
            out.append(f"component {c.name}: {why}; run `{RECORD}`")
        elif entry["sha256"] != c.digest():
            now = c.digests()
            changed = sorted({s for s in now if entry["sources"].get(s) != now[s]}
                             | (set(entry["sources"]) - set(now)))
            out.append(f"component {c.name} changed ({', '.join('kickbench/' + s for s in changed)}):"
                       f" bump its VERSION in {c.home} and run `{RECORD}` (if no number can "
                       f"change: `{RECORD} --same-numbers {c.name}`)")
    return out


def record(same_numbers: tuple[str, ...] = (), path: Path = TABLE) -> list[str]:
    """Add the hash of every component's current version. Where a recorded version's hash
    differs, refuse (and return why) unless the component is named in same_numbers ("all":
    every one): its change cannot alter a number, so it keeps its version."""
    table = load_table(path)
    refused = []
    for c in components():
        entry = {"sha256": c.digest(), "sources": c.digests()}
        recorded = table.setdefault(c.name, {})
        old = recorded.get(str(c.version))
        if old is None and any(int(v) > c.version for v in recorded):
            refused.append(f"component {c.name}: version {c.version} is below a recorded one; "
                           f"raise its VERSION in {c.home}")
            continue
        if old is not None and old["sha256"] != entry["sha256"] \
                and c.name not in same_numbers and "all" not in same_numbers:
            refused.append(f"component {c.name} changed but is still version {c.version}: bump "
                           f"its VERSION in {c.home}, or, if no number can change (messages, "
                           f"validation, a refactoring), `{RECORD} --same-numbers {c.name}`")
            continue
        recorded[str(c.version)] = entry
    path.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    return refused


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m kickbench.versions", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--record", action="store_true",
                        help=f"record the hashes of the current versions in {TABLE}")
    parser.add_argument("--same-numbers", nargs="+", default=(), metavar="COMPONENT",
                        help="with --record: re-record these components (or 'all') at their "
                             "current version: their change cannot alter a number")
    args = parser.parse_args(argv)
    if args.same_numbers and not args.record:
        parser.error("--same-numbers goes with --record")
    if args.record:
        refused = record(tuple(args.same_numbers))
        print("\n".join(refused) or f"recorded {TABLE}")
        return 1 if refused else 0
    for c in components():
        print(f"{c.name:22} v{c.version}  {c.digest()[:12]}  {', '.join(c.sources)}")
    found = problems()
    print("\n".join(found) or "every component matches its recorded hash")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
