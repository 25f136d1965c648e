"""The one place where choices become runs: values from the CLI, the widgets, papermill
parameters or Python calls -> validated CompressionSpecs, TaskSpecs and a plan.

Everything here is cheap (no model loads), so a bad value fails before any slow work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .compress import calibration as calib
from .compress import needs_calibration, registry
from .compress.spec import CompressionSpec


def options_for(method: str, layerwise: str | None, options: dict[str, Any]) -> dict[str, Any]:
    """The options among `options` that a method (with its allocation) declares."""
    declared = {o.name for o in registry.method(method).options}
    if layerwise:
        declared |= {o.name for o in registry.allocator(layerwise).options}
    return {k: v for k, v in options.items() if k in declared}


def spec(method: str, *, calibration: calib.CalibrationSpec | None = None,
         options: dict[str, Any] | None = None, **fields) -> CompressionSpec:
    """One spec; calibration is attached only where the method (or its allocation) reads it.
    An option the method does not declare is refused."""
    if method == "dense":
        if options:
            raise ValueError(f"method 'dense' takes no options, got {', '.join(options)}")
        return CompressionSpec("dense", **fields)
    s = CompressionSpec(method, options=options or {}, **fields)
    return CompressionSpec(method, options=options or {}, calibration=calibration, **fields) \
        if needs_calibration(s) else s


def grid(methods, sparsities=(), patterns=(), bits=(), group_size: int | None = None,
         symmetric: bool = False, partial_groups: bool = False,
         calibration_spec: calib.CalibrationSpec | None = None, layerwise: str | None = None,
         options: dict[str, Any] | None = None) -> list[CompressionSpec]:
    """The specs of a sweep: dense, each pruning method at every sparsity and pattern, each
    weight quantizer at every bit width (one grid setting), each fixed-level method once.
    layerwise applies to the unstructured pruning levels; options go to the methods that
    declare them (an option no chosen method declares is refused)."""
    options = dict(options or {})
    _check_options_used(methods, layerwise, options)
    specs = [CompressionSpec("dense")]
    for m in methods:
        level = registry.method(m).level
        common = dict(calibration=calibration_spec, options=options_for(m, None, options))
        if level == "bits":
            specs += [spec(m, bits=b, group_size=group_size, symmetric=symmetric,
                           partial_groups=partial_groups, **common) for b in bits]
        elif level == "fixed":
            specs.append(spec(m, **common))
        else:  # layerwise (and its options) for unstructured levels; N:M fixes every layer
            specs += [spec(m, sparsity=x, layerwise=layerwise, calibration=calibration_spec,
                           options=options_for(m, layerwise, options)) for x in sparsities]
            specs += [spec(m, pattern=x, **common) for x in patterns]
    return specs


def _check_options_used(methods, layerwise, options) -> None:
    if layerwise is not None:
        registry.allocator(layerwise)
        if not any(registry.method(m).family == "pruning" for m in methods):
            raise ValueError(f"layerwise {layerwise!r} applies to pruning methods; "
                             f"none among {', '.join(methods) or 'no methods'}")
    used = set()
    for m in methods:
        used |= set(options_for(m, layerwise, options))
    unused = sorted(set(options) - used)
    if unused:
        raise ValueError(f"option {unused[0]!r} applies to no chosen method "
                         f"({', '.join(methods)}{' with layerwise ' + layerwise if layerwise else ''})")


# the report notebook's parameters: `kickbench report` fills them, papermill injects them
REPORT_PARAMETERS = (
    "model", "methods", "sparsities", "patterns", "bits", "group_size", "symmetric",
    "partial_groups", "layerwise", "options", "tasks", "data", "limit", "task_limits",
    "calib_data", "nsamples", "seqlen", "ppl_data", "ppl_windows", "ppl_window", "device",
    "dtype", "batch_size", "seed", "temperature", "judge", "judge_model", "judge_key_env",
    "judge_scoring", "progress", "executor", "address", "gpus_per_unit", "cpus_per_unit",
    "protocol")

# how a report's tasks are run: each task's own default template, or LLM-KICK's reference
# protocol (each task's `llmkick` template where it has one; issue 17)
PROTOCOLS = {"kickbench": "kickbench's own templates (each task's default)",
             "llmkick": "LLM-KICK's reference protocol: each task's llmkick template where it "
                        "has one"}
DEFAULT_PROTOCOL = "kickbench"


@dataclass(frozen=True)
class Plan:
    """Validated runs, the tasks they cover (charts follow this order) and how to run them."""

    runs: list
    tasks: list
    settings: Any


def check_protocol(protocol: str | None) -> str:
    """The protocol's name (None: the default); an unknown one is refused, naming the allowed."""
    if protocol is None:
        return DEFAULT_PROTOCOL
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; allowed: {', '.join(PROTOCOLS)}")
    return protocol


def under_protocol(entry: str, protocol: str | None) -> str:
    """A --tasks entry as a protocol runs it: under "llmkick" a bare task name whose task has
    an llmkick template becomes 'name:llmkick'; an explicit template is kept (it was asked
    for), as is a task without one."""
    from .tasks import TASKS

    name, _, template = entry.partition(":")
    module = TASKS.get(name.strip())
    if check_protocol(protocol) == "llmkick" and not template.strip() and module is not None \
            and "llmkick" in module.TEMPLATES:
        return f"{name.strip()}:llmkick"
    return entry


def protocol_notes(tasks, protocol: str | None) -> list[str]:
    """For a report: how each of its TaskSpecs runs under the protocol, one line each (the
    tasks the llmkick protocol cannot reach say so, with the template they keep)."""
    if check_protocol(protocol) != "llmkick":
        return []
    notes = []
    for t in tasks:
        if t.template_name == "llmkick":
            notes.append(f"{t.name}: LLM-KICK's reference protocol (template llmkick)")
        elif "llmkick" in t.module.TEMPLATES:
            notes.append(f"{t.label}: template {t.template_name} chosen explicitly, kept "
                         f"(kickbench's protocol, not the reference's)")
        else:
            notes.append(f"{t.label}: no llmkick template; runs kickbench's own "
                         f"({t.template_name or 'default'})")
    return notes


def task_specs(names, data: dict | None = None, task_limits: dict | None = None,
               temperature: float | None = None, protocol: str | None = None) -> list:
    """'name' / 'name:template' entries -> TaskSpecs with their data and per-task limits;
    protocol "llmkick" puts each bare task name under its llmkick template (under_protocol)."""
    from .tasks import TASKS, TaskSpec, generation_temperature

    if not names:
        raise ValueError("--tasks is empty (no task given); available: " + ", ".join(TASKS)
                         + " (see `kickbench list`)")
    data, task_limits = data or {}, task_limits or {}
    names = [under_protocol(t, protocol) for t in names]
    return [TaskSpec.parse(t, data=data.get(t.partition(":")[0]),
                           limit=task_limits.get(t.partition(":")[0]),
                           temperature=generation_temperature(t, temperature)) for t in names]


def report_plan(p: dict) -> Plan:
    """A report's parameters -> its plan: the same for `kickbench report` (which checks it
    before starting a kernel) and the notebook (which runs it). Perplexity joins the tasks
    when ppl_windows > 0. Every input is validated here (kickbench/validate.py) before any
    model loads: settings, data files, calibration text, layer widths, judge, store.
    protocol (None: "kickbench"): "llmkick" runs every task under its llmkick template where
    it has one (task_specs)."""
    from . import sweep, validate
    from .tasks import TaskSpec

    missing = [k for k in REPORT_PARAMETERS if k not in p]
    if missing:
        raise ValueError(f"report parameters missing: {', '.join(missing)}")
    if not isinstance(p["ppl_windows"], int) or p["ppl_windows"] < 0:
        raise ValueError(f"ppl_windows must be >= 0, got {p['ppl_windows']}")
    validate.settings_values(p["limit"], p["batch_size"], p["seed"], p["device"], p["dtype"])
    protocol = check_protocol(p["protocol"])
    for task, n in (p["task_limits"] or {}).items():
        validate.limit(n, f"task limit of {task}")
    if "store_path" in p:  # the CLI passes it; the notebook opens its store itself
        validate.store_path(p["store_path"])
    cal = calib.CalibrationSpec(p["calib_data"], nsamples=p["nsamples"], seqlen=p["seqlen"])
    specs = grid(p["methods"], p["sparsities"], p["patterns"], p["bits"], p["group_size"],
                 p["symmetric"], p["partial_groups"], cal, layerwise=p["layerwise"],
                 options=p["options"])
    tasks = task_specs(p["tasks"], p["data"], p["task_limits"], p["temperature"], protocol)
    if p["ppl_windows"]:
        tasks.append(TaskSpec("perplexity", data=p["ppl_data"], limit=p["ppl_windows"],
                              window=p["ppl_window"]))
    judge = validate.judge(p["judge"], p["judge_model"], p["judge_key_env"], p["judge_scoring"])
    from .executors import executor

    where = executor(p["executor"], p["address"], p["gpus_per_unit"], p["cpus_per_unit"])
    settings = sweep.Settings(limit=p["limit"], device=p["device"], dtype=p["dtype"],
                              batch_size=p["batch_size"], seed=p["seed"], progress=p["progress"],
                              judge=judge, executor=where)
    runs = sweep.plan([p["model"]], specs, tasks)
    validate.runs(runs)
    return Plan(runs, tasks, settings)


def eval_plan(model: str, specs, task, *, limit: int | None = None, device: str | None = None,
              dtype: str | None = None, batch_size: int = 64, seed: int = 0,
              progress: bool = True, judge: str | None = None, judge_model: str | None = None,
              judge_key_env: str | None = "OPENAI_API_KEY", judge_scoring: str | None = None,
              store_path: str | None = None) -> Plan:
    """`kickbench eval`'s choices -> its plan (one model, its specs, one TaskSpec), every input
    validated before any model loads (store_path too: None is the default store)."""
    from . import sweep, validate

    validate.settings_values(limit, batch_size, seed, device, dtype)
    validate.store_path(store_path)
    the_judge = validate.judge(judge, judge_model, judge_key_env, judge_scoring)
    settings = sweep.Settings(limit=limit, device=device, dtype=dtype, batch_size=batch_size,
                              seed=seed, progress=progress, judge=the_judge)
    runs = sweep.plan([model], list(specs), [task])
    validate.runs(runs)
    return Plan(runs, [task], settings)


def parse_spec(text: str, calibration: calib.CalibrationSpec | None = None) -> CompressionSpec:
    """A spec from its label: 'dense', 'wanda 30%', 'sparsegpt 2:4', 'wanda 50% owl',
    'rtn w4', 'gptq w3 g64 sym', 'bnb-nf4 dq' (calibration attached where it is read)."""
    method, *words = text.split()
    fields: dict[str, Any] = {}
    for w in words:
        if w.endswith("%"):
            fields["sparsity"] = float(w[:-1]) / 100
        elif ":" in w:
            fields["pattern"] = w
        elif w[0] in "wg" and w[1:].isdigit():
            fields["bits" if w[0] == "w" else "group_size"] = int(w[1:])
        elif w in ("sym", "act-order", "dq"):
            fields[{"sym": "symmetric", "act-order": "act_order", "dq": "double_quant"}[w]] = True
        elif w in registry.ALLOCATORS:
            fields["layerwise"] = w
        elif w != "per-channel":
            raise ValueError(f"cannot read {w!r} in spec {text!r}: expected N%, N:M, wN, gN, "
                             f"sym, act-order, dq or a layer-wise allocation")
    return spec(method, calibration=calibration, **fields)
