"""JupyterLab on the notebooks (`kickbench lab`) and the workbench as a Voila app (`kickbench app`)."""

from __future__ import annotations

import json
import os
import sys
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


def ensure_settings(prefix: str | Path = sys.prefix) -> Path:
    """Merge OVERRIDES into <prefix>/share/jupyter/lab/settings/overrides.json (kept otherwise)."""
    path = Path(prefix) / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    current = json.loads(path.read_text()) if path.is_file() else {}
    merged = {**current, **{k: {**current.get(k, {}), **v} for k, v in OVERRIDES.items()}}
    if merged != current:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(merged, indent=2))
    return path


def _server_flags(port: int | None, ip: str) -> list[str]:
    flags = [f"--ServerApp.ip={ip}"]
    if port is not None:
        flags.append(f"--ServerApp.port={port}")
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # Jupyter refuses to run as root otherwise
        flags.append("--allow-root")
    return flags


def lab_command(root: str | Path = NOTEBOOKS, port: int | None = None, ip: str = "127.0.0.1",
                open_browser: bool = True, token: str | None = None) -> list[str]:
    """argv for JupyterLab on `root`; token='' turns authentication off (loopback tests only)."""
    argv = [sys.executable, "-m", "jupyter", "lab", f"--ServerApp.root_dir={root}",
            *_server_flags(port, ip)]
    if not open_browser:
        argv.append("--no-browser")
    if token is not None:
        argv.append(f"--IdentityProvider.token={token}")
    return argv


def app_command(notebook: str | Path = NOTEBOOKS / "workbench.ipynb", port: int | None = None,
                ip: str = "127.0.0.1", cull_idle_s: int = CULL_IDLE_S,
                open_browser: bool = True) -> list[str]:
    """argv for Voila serving the workbench: one kernel per visitor, idle ones culled."""
    if cull_idle_s < 1:
        raise ValueError(f"cull_idle_s must be >= 1 second, got {cull_idle_s}")
    argv = [sys.executable, "-m", "voila", str(notebook),
            f"--MappingKernelManager.cull_idle_timeout={cull_idle_s}",
            f"--MappingKernelManager.cull_interval={max(1, min(60, cull_idle_s // 2))}",
            f"--Voila.ip={ip}"]
    if port is not None:
        argv.append(f"--port={port}")
    if not open_browser:
        argv.append("--no-browser")
    return argv
