"""kickbench eval | compress | report | findings | lab | app | list"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from pathlib import Path

DEMO_LEVELS = "0.1,0.2,0.3,0.4,0.5,0.6"


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Every flag's help ends with its default, unless the text already says it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text.lower() or "required" in text or action.default is argparse.SUPPRESS:
            return text
        if action.default is False and action.nargs == 0:
            return f"{text} (default: off)"
        return super()._get_help_string(action)


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _add_config(p: argparse.ArgumentParser, verbose: bool = True) -> None:
    p.add_argument("--config", default=None, metavar="FILE",
                   help="TOML file (YAML with pyyaml) of this command's flags by name, dashes or "
                        "underscores (e.g. examples/llmkick-smollm2.toml); flags given on the "
                        "command line override it (default: none)")
    if verbose:
        p.add_argument("--verbose", action="store_true",
                       help="also show the notebook kernel's own output and every cell's output "
                            "(default: off: progress only)")


def _add_common(p: argparse.ArgumentParser, report: bool = False) -> None:
    p.add_argument("--model", default="smollm2-135m", help="built-in name, HF id, folder or .gguf")
    if report:
        p.add_argument("--data", action="append", default=None,
                       help="TASK=PATH (JSONL or HF dataset id), repeatable; a bare PATH is for "
                            "the first task (default: the project's data/)")
        p.add_argument("--task-limit", action="append", default=None,
                       help="TASK=N: first N items of that task (overrides --limit), repeatable "
                            "(default: --limit for every task)")
    else:
        p.add_argument("--task", default="factoid", help="factoid, mmlu, icraqa, perplexity, icsum, "
                                                          "instruct; name:template for another prompt")
        p.add_argument("--data", default=None, help="JSONL path or HF dataset id (default: data/)")
        p.add_argument("--template", default=None,
                       help="prompt template of the task (default: the task's own; kickbench list)")
    p.add_argument("--limit", type=int, default=None, help="first N items only (default: all)")
    p.add_argument("--store", default=None,
                   help="results SQLite file (default: $KICKBENCH_STORE, else results.sqlite in "
                        "the user data dir)")
    _add_device(p)
    p.add_argument("--batch-size", type=int, default=64, help="prompts per forward pass")
    p.add_argument("--seed", type=int, default=0,
                   help="random seed of sampled generation (part of every result's key)")
    p.add_argument("--temperature", type=float, default=None,
                   help="sample generation tasks at this temperature (default: greedy)")
    p.add_argument("--judge", default=None,
                   help="judge free-form answers (icsum, instruct): local:<model> (e.g. "
                        "local:smollm2-135m) or an OpenAI-compatible endpoint URL (default: no "
                        "judge, reference metrics only)")
    p.add_argument("--judge-model", default=None,
                   help="model name at the --judge endpoint (default: none; an endpoint needs one)")
    p.add_argument("--judge-key-env", default="OPENAI_API_KEY",
                   help="environment variable holding the endpoint's API key (never stored)")
    p.add_argument("--judge-scoring", choices=("expected", "generate"), default=None,
                   help="local judge: expected = scores read from its token probabilities over "
                        "1-10 (default, always readable); generate = free text, parsed")
    _add_executor(p)


def _add_executor(p: argparse.ArgumentParser) -> None:
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="where the (model, compression) units run: this process, or Ray tasks "
                        "(results are still stored here, batch by batch)")
    p.add_argument("--address", default=None,
                   help="Ray cluster address (auto, host:6379, ray://host:10001; default: start "
                        "a local Ray instance)")
    p.add_argument("--gpus-per-unit", type=float, default=0, help="Ray: GPUs each unit requests")
    p.add_argument("--cpus-per-unit", type=float, default=1, help="Ray: CPUs each unit requests")


def _executor_params(args) -> dict:
    return {"executor": args.executor, "address": args.address,
            "gpus_per_unit": args.gpus_per_unit, "cpus_per_unit": args.cpus_per_unit}


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None,
                   help="cpu, cuda, cuda:1, ... (default: cuda when available, else cpu)")
    p.add_argument("--dtype", default=None,
                   help="float32 | bfloat16 | float16 (default: bfloat16 on CUDA, float32 otherwise)")


def _add_calibration(p: argparse.ArgumentParser) -> None:
    p.add_argument("--calib-data", default=None,
                   help="calibration text for wanda/sparsegpt: JSONL with `text`, .txt, or HF id "
                        "(default: data/calibration.jsonl)")
    p.add_argument("--nsamples", type=int, default=16, help="calibration windows")
    p.add_argument("--seqlen", type=int, default=256, help="tokens per calibration window")


def _add_quantization(p: argparse.ArgumentParser, many_bits: bool = False) -> None:
    if many_bits:
        p.add_argument("--bits", default="4,3", help="bit widths for rtn/gptq, comma-separated")
    else:
        p.add_argument("--bits", type=int, default=None,
                       help="rtn/gptq bit width, 2-8 (default: none; rtn and gptq need it)")
    p.add_argument("--group-size", type=int, default=None,
                   help="rtn/gptq group size along the input (default: per output channel)")
    p.add_argument("--symmetric", action="store_true", help="rtn/gptq symmetric grid")
    p.add_argument("--partial-groups", action="store_true",
                   help="allow a shorter last group where --group-size does not divide a width")
    if not many_bits:
        p.add_argument("--act-order", action="store_true", help="gptq: columns by decreasing H_jj")
        p.add_argument("--double-quant", action="store_true", help="bnb-nf4/fp4 double quantization")


def _add_layerwise_and_options(p: argparse.ArgumentParser) -> None:
    """--layerwise, and a flag for every option a registered method or allocation declares."""
    from .compress import registry

    p.add_argument("--layerwise", default=None, choices=list(registry.ALLOCATORS) or None,
                   help="pruning: per-layer sparsity allocation (default: uniform); "
                        + "; ".join(f"{a.name}: {a.description}" for a in registry.ALLOCATORS.values()))
    for opt in registry.all_options().values():
        flag = "--" + opt.name.replace("_", "-")
        if isinstance(opt.default, bool):
            p.add_argument(flag, dest=f"opt_{opt.name}", action=argparse.BooleanOptionalAction,
                           default=None, help=f"{opt.help} (default: {opt.default})")
        else:
            p.add_argument(flag, dest=f"opt_{opt.name}", type=type(opt.default), default=None,
                           metavar=opt.name.upper(), help=f"{opt.help} (default: {opt.default})")


def _options(args) -> dict:
    """The method options given on the command line (unset ones take the method's default)."""
    return {k[4:]: v for k, v in vars(args).items() if k.startswith("opt_") and v is not None}


def _spec(args):
    from . import config
    from .compress.calibration import CalibrationSpec

    fields = dict(sparsity=args.sparsity, pattern=args.pattern, bits=args.bits,
                  group_size=args.group_size, symmetric=args.symmetric, act_order=args.act_order,
                  partial_groups=args.partial_groups, double_quant=args.double_quant,
                  layerwise=args.layerwise)
    return config.spec(args.method, calibration=CalibrationSpec(args.calib_data, args.nsamples,
                                                                args.seqlen),
                       options=_options(args), **fields)


def cmd_list(_args) -> None:
    from . import models, tasks
    from .compress import registry

    print("built-in models:", ", ".join(models.BUILTINS))
    print("methods:        ", ", ".join(["dense", *registry.METHODS]))
    for m in registry.METHODS.values():
        extra = f"; options {', '.join(o.name for o in m.options)}" if m.options else ""
        print(f"  {m.name} ({m.family}{', calibrated' if m.calibrated else ''}): {m.description}{extra}")
    for a in registry.ALLOCATORS.values():
        print(f"layerwise {a.name}: {a.description}; options {', '.join(o.name for o in a.options)}")
    print("patterns:        unstructured, N:M (e.g. 2:4, 4:8)")
    print("tasks (name:template picks another prompt, e.g. icraqa:closed):")
    for name, module in tasks.TASKS.items():
        about = TASK_ABOUT.get(name) or (module.__doc__ or name).strip().splitlines()[0]
        default = getattr(module, "DEFAULT_TEMPLATE", next(iter(module.TEMPLATES)))
        templates = ", ".join(f"{t} (default)" if t == default else t for t in module.TEMPLATES)
        scorings = ", ".join(f"{k} -> {v}" for k, v in module.SCORINGS.items())
        print(f"  {name}: {about}\n      templates {templates}; scorings {scorings}; "
              f"default data {_shown(module.DEFAULT_DATA)}")


# one line per task: what it measures and its name in LLM-KICK (Jaiswal et al., ICLR 2024)
TASK_ABOUT = {
    "factoid": "factoid QA, closed book (LLM-KICK: FreebaseQA): a short generated answer "
               "matched against the aliases",
    "mmlu": "multiple-choice reasoning (LLM-KICK's MCR-QA: MMLU), k-shot, scored by log-likelihood",
    "icraqa": "in-context retrieval QA (LLM-KICK's ICR-QA): answer from a passage (open book) "
              "or from memory (closed book)",
    "perplexity": "perplexity of held-out text (not an LLM-KICK task: the number most "
                  "compression papers report; WikiText-2 with --ppl-data)",
    "icsum": "in-context summarization (LLM-KICK's IC-Sum): news stories, ROUGE and an "
             "optional LLM judge",
    "instruct": "instruction following (LLM-KICK: Vicuna-80; MT-Bench too), ROUGE-L and an "
                "optional LLM judge",
}


def _shown(path) -> str:
    from .report import public_path

    return public_path(path)


def cmd_eval(args) -> None:
    from . import config, plots, sweep, validate
    from .compress.spec import CompressionSpec
    from .tasks import TaskSpec

    specs = [_spec(args)]
    if args.baseline:
        specs.insert(0, CompressionSpec("dense"))
    task = TaskSpec.parse(args.task, data=args.data, temperature=args.temperature)
    if args.template:
        task = TaskSpec(task.name, data=args.data, template=args.template, temperature=args.temperature)
    plan = config.eval_plan(args.model, specs, task, limit=args.limit, device=args.device,
                            dtype=args.dtype, batch_size=args.batch_size, seed=args.seed,
                            judge=args.judge, judge_model=args.judge_model,
                            judge_key_env=args.judge_key_env, judge_scoring=args.judge_scoring,
                            store_path=args.store)
    store = validate.open_store(args.store)
    from .executors import executor

    frame = sweep.execute(plan.runs, store, plan.settings,
                          executor=executor(**_executor_params(args)))
    frame = plots.with_text(frame)
    table = frame.pivot(index=["model", "label", "size", "n"], columns="metric", values="score")
    print("mean [95% bootstrap CI]")
    print(table.to_string())
    print(f"dtype: {validate.dtype_used(args.device, args.dtype)}")
    _judge_warnings(frame)
    print(f"results store: {store.path}")


def _judge_warnings(frame) -> None:
    from .judge import order_warning

    for row in frame[frame.metric == "order_disagreement"].itertuples():
        if text := order_warning(row.label, row.value):
            print(text)


def cmd_compress(args) -> None:
    from . import compress, models, validate
    from .compress import calibration

    spec = _spec(args)
    validate.device(args.device)
    validate.dtype(args.dtype)
    validate.model_out(args.out)
    validate.model(args.model)
    validate.compression(args.model, [spec])
    lm = models.load(args.model, device=args.device, dtype=args.dtype)
    cspec = compress.calibration_spec(spec)
    cal = calibration.prepare(lm.tokenizer, cspec) if cspec else None
    with compress.compressed(lm, spec, cal) as (clm, rep):
        clm.model.save_pretrained(args.out)
        clm.tokenizer.save_pretrained(args.out)
    size = rep["size"]
    print(f"{spec.label}: sparsity {rep['sparsity']:.4f}, {size['bits_per_weight']:.2f} bits per "
          f"compressed weight, {size['size_fraction']:.1%} of the 16-bit model "
          f"({size['size_mb']:.0f} MB), in {rep['seconds']:.1f} s; saved to {args.out}")
    print(f"dtype: {str(lm.dtype).removeprefix('torch.')} on {lm.device.type}")
    if "arithmetic" in rep:
        print(f"note: {rep['arithmetic']}")


def report_params(args) -> dict:
    """`kickbench report`'s flags -> the report notebook's parameters."""
    from . import validate

    tasks = _names(args.tasks)
    return {"model": args.model, "methods": _names(args.methods),
            "sparsities": _floats(args.sparsities), "patterns": _names(args.patterns),
            "bits": validate.ints(args.bits, "--bits"), "group_size": args.group_size,
            "symmetric": args.symmetric, "partial_groups": args.partial_groups,
            "tasks": tasks, "data": _task_data(args.data, tasks),
            "task_limits": {k: _count(v, "--task-limit")
                            for k, v in _task_data(args.task_limit, tasks).items()},
            "limit": args.limit, "metric": args.metric, "store_path": args.store,
            "device": args.device, "dtype": args.dtype, "batch_size": args.batch_size,
            "seed": args.seed, "progress": False, "calib_data": args.calib_data,
            "nsamples": args.nsamples, "seqlen": args.seqlen, "ppl_data": args.ppl_data,
            "ppl_windows": args.ppl_windows, "ppl_window": args.ppl_window,
            "temperature": args.temperature, "judge": args.judge, "judge_model": args.judge_model,
            "judge_key_env": args.judge_key_env, "judge_scoring": args.judge_scoring,
            "layerwise": args.layerwise, "options": _options(args),
            "image_formats": _image_formats(args), "protocol": args.protocol,
            **_executor_params(args)}


def cmd_report(args) -> None:
    from . import config, report, validate

    params = report_params(args)
    validate.output_dir(args.out)
    validate.report_name(args.name)
    plan = config.report_plan(params)  # what the notebook will run, checked before a kernel starts
    validate.metric(args.metric, plan.tasks)
    ipynb, html = report.render(params, out_dir=args.out, name=args.name, verbose=args.verbose)
    print(f"executed notebook: {ipynb}\nHTML report:       {html}")
    if params["image_formats"]:
        print(f"figures:           {html.with_name(html.stem + '-figures')}/")
    print(f"dtype: {validate.dtype_used(args.device, args.dtype)}")


def cmd_findings(args) -> None:
    from . import report, validate

    for flag, n in (("--limit", args.limit), ("--large-limit", args.large_limit)):
        validate.limit(n, flag, "questions")
    validate.model(args.model)
    validate.model(args.large_model, "--large-model")
    validate.settings_values(None, args.batch_size, 0, args.device, args.dtype)
    validate.store_path(args.store)
    validate.output_dir(args.out)
    validate.report_name(args.name)
    formats = _image_formats(args)
    given, declared = _notebook_params(args.param or [], report.FINDINGS)
    params = {"model": args.model, "large_model": args.large_model, "limit": args.limit,
              "large_limit": args.large_limit, "store_path": args.store, "device": args.device,
              "dtype": args.dtype, "batch_size": args.batch_size, "progress": False,
              "image_formats": formats, **_executor_params(args), **given}
    validate.findings({**_defaults(declared), **params})
    ipynb, html = report.render(params, out_dir=args.out, name=args.name, notebook=report.FINDINGS,
                                verbose=args.verbose)
    print(f"executed notebook: {ipynb}\nHTML report:       {html}")
    print(f"dtype: {validate.dtype_used(params['device'], params['dtype'])}")


def _image_formats(args) -> list[str]:
    """--png/--pdf as image formats; Chromium must be there before any work starts."""
    from . import report

    formats = [f for f in ("png", "pdf") if getattr(args, f)]
    if formats and report.find_browser() is None:
        raise ValueError("--png/--pdf need Chromium for kaleido: `apt-get install chromium` (make "
                         "setup does it when run as root) or set BROWSER_PATH")
    return formats


def _notebook_params(entries: list[str], notebook) -> tuple[dict, dict]:
    """-p NAME=VALUE (VALUE as JSON, else a string) for a parameter the notebook declares,
    typed like the notebook's default; returns (given values, the notebook's declarations)."""
    import json

    import papermill

    from . import validate

    declared = dict(papermill.inspect_notebook(str(notebook)))
    known = list(declared)
    out = {}
    for entry in entries:
        name, sep, text = entry.partition("=")
        if not sep or name not in known:
            raise ValueError(f"-p {entry!r}: expected NAME=VALUE with NAME one of {', '.join(known)}")
        try:
            out[name] = json.loads(text)
        except json.JSONDecodeError:
            out[name] = text
    validate.notebook_params(out, declared)
    return out, declared


def _defaults(declared: dict) -> dict:
    """The notebook's parameter defaults that are literals (others are left out)."""
    import ast

    out = {}
    for name, d in declared.items():
        try:
            out[name] = ast.literal_eval(str(d.get("default")))
        except (ValueError, SyntaxError):
            pass
    return out


def _count(text: str, flag: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{flag} expects TASK=N with N a positive integer, got {text!r}")
    return int(text)


def _task_data(entries: list[str] | None, tasks: list[str]) -> dict[str, str]:
    """--data PATH (for the first task) or --data TASK=PATH, repeatable -> {task name: source}
    (--task-limit TASK=N is read the same way)."""
    names = [t.partition(":")[0] for t in tasks]
    out = {}
    for entry in (entries or []) if names else []:  # no tasks: _validate_report says so
        task, sep, source = entry.partition("=")
        if not sep:
            task, source = names[0], entry
        if task not in names:
            raise ValueError(f"--data {entry!r}: task {task!r} is not among --tasks ({', '.join(names)})")
        out[task] = source
    return out


def cmd_lab(args) -> None:
    from . import lab, models, validate

    validate.port(args.port)
    if args.command == "app":
        validate.cull_idle(args.cull_idle)
        for name in args.model or ():
            models.resolve_source(name)  # a bad name fails before the server starts
    if args.command == "lab":
        print(f"JupyterLab settings: {lab.ensure_settings()}")
        argv = lab.lab_command(port=args.port, open_browser=not args.no_browser, public=args.public)
    else:
        argv = lab.app_command(port=args.port, cull_idle_s=args.cull_idle,
                               open_browser=not args.no_browser, public=args.public,
                               models=args.model or ())
    print(" ".join(argv), flush=True)
    print(f"open {lab.url(argv)}", flush=True)
    if not args.dry_run:
        os.execv(argv[0], argv)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="kickbench", description=__doc__, formatter_class=_Help)
    sub = top.add_subparsers(dest="command", required=True)

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=text, formatter_class=_Help)

    command("list", "built-in models, methods, tasks (with their LLM-KICK names), templates, "
                    "scorings and default data").set_defaults(fn=cmd_list)

    p = command("eval", "compress once and evaluate (dense baseline included)")
    _add_config(p, verbose=False)
    _add_common(p)
    p.add_argument("--method", default="magnitude", help="compression method (kickbench list)")
    p.add_argument("--sparsity", type=float, default=0.0, help="pruning: fraction of weights zeroed")
    p.add_argument("--pattern", default="unstructured", help="unstructured or N:M, e.g. 2:4")
    p.add_argument("--no-baseline", dest="baseline", action="store_false",
                   help="skip the dense model (default: it is evaluated too, once per store)")
    _add_quantization(p)
    _add_calibration(p)
    _add_layerwise_and_options(p)
    p.set_defaults(fn=cmd_eval)

    p = command("compress", "compress a model and save it as a folder")
    p.add_argument("--model", default="smollm2-135m", help="built-in name, HF id, folder or .gguf")
    p.add_argument("--method", default="magnitude", help="compression method (kickbench list)")
    p.add_argument("--sparsity", type=float, default=0.0, help="pruning: fraction of weights zeroed")
    p.add_argument("--pattern", default="unstructured", help="unstructured or N:M, e.g. 2:4")
    _add_device(p)
    p.add_argument("--out", required=True, help="folder to save the compressed model in (required)")
    _add_quantization(p)
    _add_calibration(p)
    _add_layerwise_and_options(p)
    p.set_defaults(fn=cmd_compress)

    p = command("report", "render the papermill report to reports/ (ipynb + HTML)")
    _add_config(p)
    _add_common(p, report=True)
    p.add_argument("--methods", default="magnitude",
                   help="comma-separated compression methods (kickbench list); dense is always in")
    p.add_argument("--sparsities", default=DEMO_LEVELS,
                   help="comma-separated pruning levels for the pruning methods")
    p.add_argument("--patterns", default="2:4", help="comma-separated N:M patterns, or ''")
    p.add_argument("--tasks", default="factoid",
                   help="comma-separated: factoid, mmlu, icraqa, icsum, instruct; name:template for "
                        "another prompt (icraqa:closed, mmlu:0-shot)")
    p.add_argument("--protocol", default="kickbench",
                   help="kickbench (each task's own default template) or llmkick (LLM-KICK's "
                        "reference protocol: every task under its llmkick template where it has "
                        "one; the others keep theirs and the report says so)")
    p.add_argument("--metric", default=None,
                   help="chart this metric where a task has it (e.g. legacy_accuracy); "
                        "default: each task's headline metric")
    p.add_argument("--out", default="reports", help="output folder")
    p.add_argument("--name", default=None, help="file name stem (default: report-<time>)")
    p.add_argument("--png", action="store_true", help="also write every figure as PNG (kaleido)")
    p.add_argument("--pdf", action="store_true", help="also write every figure as PDF (kaleido)")
    p.add_argument("--ppl-data", default=None, help="perplexity text (default: data/heldout_text.jsonl)")
    p.add_argument("--ppl-windows", type=int, default=4, help="perplexity windows; 0 skips perplexity")
    p.add_argument("--ppl-window", type=int, default=None,
                   help="tokens per perplexity window (default: the model's context, up to 2048)")
    _add_quantization(p, many_bits=True)
    _add_calibration(p)
    _add_layerwise_and_options(p)
    p.set_defaults(fn=cmd_report)

    p = command("findings", "render notebooks/findings.ipynb: LLM-KICK's five findings")
    _add_config(p)
    p.add_argument("--model", default="smollm2-135m", help="the model of findings 1-4")
    p.add_argument("--large-model", default="gemma3-270m", help="the larger model of finding 5")
    p.add_argument("--limit", type=int, default=500, help="factoid questions (findings 1-4)")
    p.add_argument("--large-limit", type=int, default=200, help="factoid questions (finding 5)")
    p.add_argument("--store", default=None,
                   help="results SQLite file (default: $KICKBENCH_STORE, else results.sqlite in "
                        "the user data dir)")
    _add_device(p)
    p.add_argument("--batch-size", type=int, default=64, help="prompts per forward pass")
    p.add_argument("--out", default="reports", help="output folder")
    p.add_argument("--name", default="findings", help="file name stem")
    p.add_argument("--png", action="store_true", help="also write every figure as PNG")
    p.add_argument("--pdf", action="store_true", help="also write every figure as PDF")
    p.add_argument("-p", "--param", action="append", default=None, metavar="NAME=VALUE",
                   help="any notebook parameter, VALUE as JSON (e.g. -p 'methods=[\"wanda\"]'), "
                        "repeatable (default: the notebook's own values)")
    _add_executor(p)
    p.set_defaults(fn=cmd_findings)

    for name, text in (("lab", "open JupyterLab on the notebooks (workbench, findings, report)"),
                       ("app", "serve the workbench as a Voila app (a kernel per visitor)")):
        p = command(name, text)
        p.add_argument("--port", type=int, default=None,
                       help=f"port to listen on (default: {lab_port(name)}, the server's own)")
        p.add_argument("--no-browser", action="store_true", help="do not open a browser")
        p.add_argument("--dry-run", action="store_true", help="print the command, do not start it")
        p.add_argument("--public", action="store_true",
                       help="listen on every interface, not only 127.0.0.1 (a token is still required)")
        if name == "app":
            p.add_argument("--cull-idle", type=int, default=600,
                           help="seconds before an idle visitor's kernel is shut down")
            p.add_argument("--model", action="append", default=None, metavar="NAME",
                           help="a model visitors may pick besides the built-ins (HF id, folder "
                                "or .gguf; repeatable; default: the built-ins only)")
        p.set_defaults(fn=cmd_lab)
    top.commands = sub.choices  # name -> its parser (--config reads a command's flags)
    return top


def lab_port(command: str) -> int:
    from .lab import APP_PORT, LAB_PORT

    return APP_PORT if command == "app" else LAB_PORT


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line, with a --config file's values under the flags given there."""
    top = parser()
    args = top.parse_args(argv)
    if getattr(args, "config", None):
        args = top.parse_args(with_config(top, args, argv))
    return args


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)  # --help, a bad flag: argparse's own message and exit 2
    try:
        args = parse(argv)
        args.fn(args)
    except Exception as e:  # noqa: BLE001 - expected errors become one line; the rest re-raise
        text = _expected(e, args)
        if text is None:
            raise  # a real bug: the traceback is what a report needs
        print(f"kickbench: error: {' '.join(text.split())}", file=sys.stderr)
        return 2
    return 0


# ---- --config FILE ------------------------------------------------------------------------
def read_config(path: str) -> dict:
    """A flat table of flag names -> values from a TOML file (YAML: .yaml/.yml, with pyyaml)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config {path}: no such file")
    try:
        if p.suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise ValueError(f"config {path}: YAML needs pyyaml (pip install pyyaml); "
                                 "or write it as TOML") from None
            conf = yaml.safe_load(p.read_text(encoding="utf-8"))
        else:
            import tomllib

            conf = tomllib.loads(p.read_text(encoding="utf-8"))
    except ValueError as e:  # tomllib.TOMLDecodeError and yaml.YAMLError's parse errors
        raise ValueError(f"config {path}: {e}") from None
    except Exception as e:  # noqa: BLE001 - e.g. yaml.YAMLError
        raise ValueError(f"config {path}: {type(e).__name__}: {e}") from None
    if not isinstance(conf, dict):
        raise ValueError(f"config {path}: expected a table of flag names and values")
    return conf


def with_config(top: argparse.ArgumentParser, args, argv: list[str]) -> list[str]:
    """argv with the config file's values inserted as flags right after the command, so every
    flag given on the command line overrides them (a repeatable flag such as --data given
    there replaces the file's entries). An unknown key is refused, naming it."""
    flags = {s: a for a in top.commands[args.command]._actions
             for s in a.option_strings if s.startswith("--")}
    words = []
    for key, value in read_config(args.config).items():
        flag = "--" + str(key).replace("_", "-")
        action = flags.get(flag)
        if action is None or action.dest in ("config", "help"):
            known = [f for f in flags if f not in ("--config", "--help")]
            close = difflib.get_close_matches(flag, known, 1)
            raise ValueError(f"config {args.config}: unknown key {key!r}: kickbench {args.command} "
                             f"has no {flag} flag" + (f" (did you mean {close[0][2:]!r}?)" if close else ""))
        if isinstance(action, argparse._AppendAction) and getattr(args, action.dest) != action.default:
            continue  # given on the command line: those entries replace the file's
        words += _config_words(args.config, key, flag, action, value)
    at = argv.index(args.command) + 1
    return [*argv[:at], *words, *argv[at:]]


def _config_words(path: str, key: str, flag: str, action, value) -> list[str]:
    import json

    if value is None:  # YAML null: the flag's default
        return []
    if isinstance(action, argparse.BooleanOptionalAction):
        if not isinstance(value, bool):
            raise ValueError(f"config {path}: {key!r} is true or false, got {value!r}")
        return [flag if value else "--no-" + flag[2:]]
    if action.nargs == 0:  # store_true / store_false
        if not isinstance(value, bool):
            raise ValueError(f"config {path}: {key!r} is true or false, got {value!r}")
        return [flag] if value else []
    if isinstance(value, bool) or isinstance(value, dict) and not isinstance(action, argparse._AppendAction):
        raise ValueError(f"config {path}: {key!r} takes a value like {flag} does, got {value!r}")
    if isinstance(action, argparse._AppendAction):  # TASK=VALUE entries: a table, a list or one
        text = (lambda v: json.dumps(v)) if action.dest == "param" else str
        entries = ([f"{k}={text(v)}" for k, v in value.items()] if isinstance(value, dict)
                   else list(value) if isinstance(value, list) else [value])
        return [f"{flag}={e}" for e in entries]
    text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
    return [f"{flag}={text}"]


def _expected(e: Exception, args) -> str | None:
    """The one-line message of an expected error (bad input, a missing or unwritable file, a
    judge endpoint that fails, a results store SQLite cannot use), None for anything else."""
    import sqlite3

    from .judge import JudgeError

    if isinstance(e, JudgeError):
        return f"judge: {e}"
    if isinstance(e, sqlite3.Error):
        from .store import default_path

        return f"results store {getattr(args, 'store', None) or default_path()}: {e}"
    if isinstance(e, (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
                      PermissionError, FileExistsError)):
        return str(e)
    if isinstance(e, (ConnectionError, TimeoutError)):  # e.g. a hub that went away mid-run
        return f"{type(e).__name__}: {e}"
    return None


if __name__ == "__main__":
    sys.exit(main())
