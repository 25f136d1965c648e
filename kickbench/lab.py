"""JupyterLab on the notebooks (`kickbench lab`) and the workbench as a Voila app (`kickbench app`).

Both listen on 127.0.0.1 with a fresh random token unless told otherwise (`public=True`
listens on every interface, still with a token). The app's model box offers only the
built-in models and the ones the command names (`models=`): the list reaches the
workbench notebook through KICKBENCH_APP_MODELS (see `app_models`)."""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
# A fresh JupyterLab 4.6 asks "Select Kernel" for every notebook although one is the default,
# and offers to fetch news and updates from the network (offline here: errors and a pop-up).
OVERRIDES = {"@jupyterlab/notebook-extension:tracker": {"autoStartDefaultKernel": True},
             "@jupyterlab/apputils-extension:notification": {"fetchNews": "false",
                                                              "checkForUpdates": False}}
# A kernel per visitor costs ~130 MB: free the ones nobody has touched for a while.
CULL_IDLE_S = 600
LOOPBACK = "127.0.0.1"
PUBLIC = "0.0.0.0"  # every IPv4 interface
LAB_PORT, APP_PORT = 8888, 8866  # the servers' defaults
# JSON list of the models an app visitor may pick besides the built-ins. A workbench kernel
# started by Voila (VOILA_APP_PORT in its environment) is in app mode even without it.
APP_MODELS_ENV = "KICKBENCH_APP_MODELS"
TOKEN_ENV = "JUPYTER_TOKEN"  # read by jupyter_server's identity provider (lab and Voila)


def ensure_settings(prefix: str | Path = sys.prefix) -> Path:
    """Merge OVERRIDES into <prefix>/share/jupyter/lab/settings/overrides.json (kept otherwise)."""
    path = Path(prefix) / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    current = json.loads(path.read_text()) if path.is_file() else {}
    merged = {**current, **{k: {**current.get(k, {}), **v} for k, v in OVERRIDES.items()}}
    if merged != current:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(merged, indent=2))
    return path


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe) for one server start."""
    return secrets.token_urlsafe(32)


def _is_loopback(ip: str) -> bool:
    if ip == "localhost":
        return True
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


def _address(ip: str | None, public: bool, token: str | None) -> tuple[str, str]:
    """(ip, token): loopback unless public; a generated token unless one is given. An empty
    token (authentication off) is refused anywhere but loopback."""
    ip = ip or (PUBLIC if public else LOOPBACK)
    if public and _is_loopback(ip):
        raise ValueError(f"public=True with the loopback address {ip!r}: give one or the other")
    token = new_token() if token is None else token
    if not token and not _is_loopback(ip):
        raise ValueError(f"refusing to serve on {ip} without a token (authentication off is "
                         "for loopback tests only)")
    return ip, token


def _server_flags(port: int | None, ip: str) -> list[str]:
    flags = [f"--ServerApp.ip={ip}"]
    if port is not None:
        flags.append(f"--ServerApp.port={port}")
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # Jupyter refuses to run as root otherwise
        flags.append("--allow-root")
    return flags


def _launcher(env: dict[str, str]) -> list[str]:
    """`env NAME=VALUE ...` before the server's argv: `env` execs the server, so the values
    (the token) stay out of the long-running process's command line, which `ps` shows to
    every local user."""
    return [shutil.which("env") or "/usr/bin/env", *(f"{k}={v}" for k, v in env.items())]


def lab_command(root: str | Path = NOTEBOOKS, port: int | None = None, ip: str | None = None,
                open_browser: bool = True, token: str | None = None,
                public: bool = False) -> list[str]:
    """argv for JupyterLab on `root`: on 127.0.0.1 (every interface with public=True) with a
    fresh random token (JUPYTER_TOKEN) unless `token` is given; token='' turns authentication
    off (loopback tests only)."""
    ip, token = _address(ip, public, token)
    argv = [*(_launcher({TOKEN_ENV: token}) if token else []),
            sys.executable, "-m", "jupyter", "lab", f"--ServerApp.root_dir={root}",
            *_server_flags(port, ip)]
    if not token:
        argv.append("--IdentityProvider.token=")
    if not open_browser:
        argv.append("--no-browser")
    return argv


def app_command(notebook: str | Path = NOTEBOOKS / "workbench.ipynb", port: int | None = None,
                ip: str | None = None, cull_idle_s: int = CULL_IDLE_S,
                open_browser: bool = True, token: str | None = None, public: bool = False,
                models: Sequence[str] = ()) -> list[str]:
    """argv for Voila serving the workbench: one kernel per visitor, idle ones culled; on
    127.0.0.1 (every interface with public=True) with a fresh random token (JUPYTER_TOKEN)
    unless `token` is given (''; authentication off, loopback only). The visitors' model box
    offers the built-ins and `models` only (passed to the notebook in KICKBENCH_APP_MODELS)."""
    if cull_idle_s < 1:
        raise ValueError(f"cull_idle_s must be >= 1 second, got {cull_idle_s}")
    allowed = _model_list(models, "app model")
    ip, token = _address(ip, public, token)
    env = {APP_MODELS_ENV: json.dumps(allowed, separators=(",", ":")),
           **({TOKEN_ENV: token} if token else {})}
    argv = [*_launcher(env), sys.executable, "-m", "voila", str(notebook),
            f"--MappingKernelManager.cull_idle_timeout={cull_idle_s}",
            f"--MappingKernelManager.cull_interval={max(1, min(60, cull_idle_s // 2))}",
            f"--Voila.ip={ip}",
            # Voila 0.5 turns authentication off unless told: auto_token reads JUPYTER_TOKEN
            "--Voila.auto_token=True" if token else "--Voila.token="]
    if port is not None:
        argv.append(f"--port={port}")
    if not open_browser:
        argv.append("--no-browser")
    return argv


def launch_env(argv: Sequence[str]) -> dict[str, str]:
    """The NAME=VALUE settings a lab_command/app_command argv starts its server with."""
    if not argv or Path(argv[0]).name != "env":
        return {}
    out = {}
    for a in argv[1:]:
        if "=" not in a or a.startswith("-"):
            break
        k, v = a.split("=", 1)
        out[k] = v
    return out


def url(argv: Sequence[str]) -> str:
    """The address (token included) a lab_command/app_command argv will serve: what to open."""
    flags = dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)
    app = "voila" in argv
    ip = flags.get("Voila.ip" if app else "ServerApp.ip", LOOPBACK)
    port = flags.get("port" if app else "ServerApp.port", APP_PORT if app else LAB_PORT)
    token = launch_env(argv).get(TOKEN_ENV, "")
    if ip == PUBLIC:
        import socket

        ip = socket.gethostname()
    host = f"[{ip}]" if ":" in ip else ip
    return f"http://{host}:{port}/{'' if app else 'lab'}" + (f"?token={token}" if token else "")


def _model_list(names: Sequence[str], what: str) -> list[str]:
    if isinstance(names, str):
        raise ValueError(f"{what}s must be a list of names, got the string {names!r}")
    out = []
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{what} names must be non-empty strings, got {name!r}")
        out.append(name.strip())
    return list(dict.fromkeys(out))


def app_models(environ: Mapping[str, str] | None = None) -> list[str] | None:
    """The models an app visitor may pick besides the built-ins, or None outside the app
    (the workbench then takes any model). Read from KICKBENCH_APP_MODELS (a JSON list); a
    kernel Voila started without it is in app mode with the built-ins only."""
    env = os.environ if environ is None else environ
    raw = env.get(APP_MODELS_ENV)
    if raw is None:
        return [] if "VOILA_APP_PORT" in env else None
    try:
        names = json.loads(raw)
    except ValueError:
        names = None
    if not isinstance(names, list):
        raise ValueError(f"{APP_MODELS_ENV} must be a JSON list of model names, got {raw!r}")
    return _model_list(names, "app model")
