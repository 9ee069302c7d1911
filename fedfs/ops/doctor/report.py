"""`fedfs doctor`'s run and report: every check in the order an admin fixes things,
printed as lines for people or as JSON for tools.

Runs the checks one after another in the command's only thread; imports the
doctor's check modules and config.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fedfs import config
from fedfs.errors import FedfsError
from fedfs.events import printable
from fedfs.ops.doctor.bucket_policy import check_bucket_policies
from fedfs.ops.doctor.cache import check_cache, check_refused
from fedfs.ops.doctor.finding import FAIL, OK, WARN, Finding
from fedfs.ops.doctor.fuse import check_fuse
from fedfs.ops.doctor.identity import check_identity
from fedfs.ops.doctor.metrics import check_metrics
from fedfs.ops.doctor.policy import check_policy, check_policy_log
from fedfs.ops.doctor.running import check_daemon
from fedfs.ops.doctor.store import MAX_KEYS, check_store


def run(
    path: Path,
    max_keys: int = MAX_KEYS,
    fuse_dev: Path = Path("/dev/fuse"),
    fuse_conf: Path = Path("/etc/fuse.conf"),
) -> list[Finding]:
    """Every check, in the order an admin fixes things."""
    try:
        cfg = config.load(path)
    except FedfsError as e:
        return [Finding("config", FAIL, str(e), f"edit {path} as the message says")]
    found = [
        Finding(
            "config",
            OK,
            f"{path} is valid: {len(cfg.buckets)} bucket(s) at "
            f"{cfg.store.endpoint or 'AWS S3'}, cache {cfg.cache.dir}",
        )
    ]
    found += check_daemon(cfg)
    found += check_store(cfg, max_keys)
    found += check_bucket_policies(cfg)
    found += check_identity(cfg)
    found += check_cache(cfg.cache)
    found.append(check_refused(cfg.cache))
    found += check_fuse(cfg.fs.allow_other, fuse_dev, fuse_conf)
    found += check_policy(cfg)
    found += check_policy_log(cfg)
    found += check_metrics(cfg.metrics, daemon_runs=found[1].status == OK)
    return found


def _lines(findings: list[Finding], details: int = 20) -> Iterator[str]:
    width = max(len(f.check) for f in findings)
    for f in findings:
        yield f"{f.status:<5} {f.check:<{width}}  {printable(f.found)}"
        pad = " " * (6 + width + 2)
        for d in f.details[:details]:
            yield f"{pad}  {printable(d)}"  # details name keys, which may hold any byte
        if len(f.details) > details:
            yield f"{pad}  ... and {len(f.details) - details} more (--json lists them all)"
        if f.fix and f.status in (WARN, FAIL):
            yield f"{pad}fix: {f.fix}"


def report(path: Path, as_json: bool = False, max_keys: int = MAX_KEYS) -> int:
    """Print every finding; exit status 1 if any check failed."""
    findings = run(path, max_keys)
    failed = sum(f.status == FAIL for f in findings)
    warned = sum(f.status == WARN for f in findings)
    if as_json:
        out: dict[str, Any] = {
            "config": str(path),
            "ok": not failed,
            "findings": [dataclasses.asdict(f) for f in findings],
        }
        print(json.dumps(out, indent=2))
    else:
        for line in _lines(findings):
            print(line)
        print(
            f"{failed} problem(s), {warned} warning(s)"
            if failed or warned
            else f"all {len(findings)} checks OK"
        )
    sys.stdout.flush()
    return 1 if failed else 0
