"""`fedfs admin`: the admin key and which node keys the shared policy log trusts.

These commands talk to the object store directly with the credentials of a config
file; no mount needs to run. The admin's private key never leaves the machine it
was made on: only enrolments signed with it go to the log (PREFIX/nodes/KEYID.json),
and every node checks them against the public keys of `[policy] admin_keys`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from fedfs.audit.chain import SigningKey
from fedfs.config import Config
from fedfs.errors import FedfsError
from fedfs.policy.log import Enrollment, LogError, LogStore, load_admin_keys
from fedfs.store.s3 import ObjectStore


def keygen(out: Path) -> tuple[Path, Path]:
    """A new admin key: OUT (private, 0600) and OUT.pub (public, for admin_keys)."""
    pub = out.with_name(out.name + ".pub")
    for p in (out, pub):
        if p.exists():
            raise FedfsError(f"{p} exists already; remove it or choose another name")
    key = SigningKey.generate()
    key.save(out)
    os.chmod(out, 0o600)
    pub.write_bytes(key.public_pem())
    return out, pub


def _log(cfg: Config) -> LogStore:
    if cfg.policy.log_bucket is None:
        raise FedfsError(
            f"{cfg.path}: [policy] log_bucket is not set, so this config has no shared policy "
            "log to enroll nodes in"
        )
    return LogStore(ObjectStore(cfg.store), cfg.policy.log_bucket, cfg.policy.log_prefix)


def _admin(cfg: Config, admin_key: Path) -> SigningKey:
    try:
        key = SigningKey.load(admin_key)
    except (OSError, ValueError) as e:
        raise FedfsError(f"{admin_key}: not a readable private key ({e})") from None
    if key.key_id not in load_admin_keys(cfg.policy.admin_keys):
        raise FedfsError(
            f"admin key {key.key_id} ({admin_key}) is not among [policy] admin_keys of "
            f"{cfg.path}; nodes would ignore what it signs"
        )
    return key


def enroll(cfg: Config, admin_key: Path, node: str, public_key: Path) -> Enrollment:
    """Let the key in PUBLIC_KEY (a node's `fedfs admin node-key`) speak for NODE."""
    try:
        pem = public_key.read_text()
    except OSError as e:
        raise FedfsError(f"{public_key}: {e.strerror}") from None
    try:
        enrolment = Enrollment.make(_admin(cfg, admin_key), node, pem)
    except (LogError, ValueError) as e:
        raise FedfsError(f"{public_key}: {e}") from None
    _log(cfg).put_enrollment(enrolment)
    return enrolment


def enrollments(cfg: Config) -> list[dict[str, Any]]:
    """Every enrolment in the log, and whether nodes trust it."""
    admins = load_admin_keys(cfg.policy.admin_keys)
    rows = []
    for key, data in _log(cfg).enrollments():
        try:
            e = Enrollment.decode(data)
        except LogError as err:
            rows.append({"node": "?", "key_id": key, "state": f"invalid: {err}"})
            continue
        problem = e.check(admins)
        state = (
            f"NOT TRUSTED: {problem}"
            if problem
            else "revoked " + _iso(e.revoked_at)
            if e.revoked_at is not None
            else "enrolled"
        )
        rows.append(
            {
                "node": e.node,
                "key_id": e.key_id,
                "enrolled": _iso(e.enrolled_at),
                "admin_key": e.admin_key_id,
                "state": state,
            }
        )
    return sorted(rows, key=lambda r: (r["node"], r["key_id"]))


def revoke(cfg: Config, admin_key: Path, which: str) -> list[Enrollment]:
    """Revoke the key WHICH (a key id), or every key of node WHICH."""
    admin = _admin(cfg, admin_key)
    log = _log(cfg)
    found = []
    for _, data in log.enrollments():
        try:
            e = Enrollment.decode(data)
        except LogError:
            continue
        if which in (e.key_id, e.node) and e.revoked_at is None:
            found.append(e)
    if not found:
        raise FedfsError(f"no enrolled, unrevoked key or node {which!r} (see `fedfs admin nodes`)")
    done = []
    for e in found:
        revoked = Enrollment.make(admin, e.node, e.public_pem, e.enrolled_at, time.time())
        log.put_enrollment(revoked)
        done.append(revoked)
    return done


def _iso(t: float | None) -> str:
    return "" if t is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))
