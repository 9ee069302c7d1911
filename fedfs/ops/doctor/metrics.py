"""Doctor's checks of the metrics outputs: the textfile's directory is writable and
the listen address is free (or held by this config's running mount).

Binds the address for a moment to try it; runs in the doctor's only thread.
"""

from __future__ import annotations

import os
import socket

from fedfs.config import MetricsConfig
from fedfs.ops.doctor.finding import FAIL, OK, Finding


def check_metrics(cfg: MetricsConfig, daemon_runs: bool) -> list[Finding]:
    found = []
    if cfg.textfile is not None:
        d = cfg.textfile.parent
        if d.is_dir() and os.access(d, os.W_OK | os.X_OK):
            found.append(Finding("metrics textfile", OK, f"{d} is writable"))
        else:
            found.append(
                Finding(
                    "metrics textfile",
                    FAIL,
                    f"{d} is not a writable directory: the metrics file cannot be written",
                    f"mkdir -p {d} (node_exporter --collector.textfile.directory={d})",
                )
            )
    if cfg.listen is not None:
        host, port = cfg.listen
        if daemon_runs:
            found.append(Finding("metrics listen", OK, f"{host}:{port} (the running mount's)"))
        else:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(family) as s:
                try:
                    s.bind((host, port))
                    found.append(Finding("metrics listen", OK, f"{host}:{port} is free"))
                except OSError as e:
                    found.append(
                        Finding(
                            "metrics listen",
                            FAIL,
                            f"cannot listen on {host}:{port}: {e.strerror}",
                            "pick a free port for [metrics] listen (ss -ltnp shows who has it)",
                        )
                    )
    return found
