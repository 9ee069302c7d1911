"""Doctor's checks of policy: the site policy files load, the state directory is
private, the policy database opens, the audit chain verifies, and, with a shared
policy log, its bucket answers and this node's key is enrolled.

Reads only (the database, the chain, one listing of the log's enrolments);
runs in the doctor's only thread. Calls policy, audit and the store.
"""

from __future__ import annotations

import stat
import time

from fedfs.audit.chain import AuditChain, SigningKey
from fedfs.config import Config
from fedfs.errors import FedfsError
from fedfs.ops.doctor.finding import FAIL, OK, WARN, Finding, owner
from fedfs.ops.doctor.store import quick_store
from fedfs.policy.log import Enrollment, LogError, LogStore, load_admin_keys
from fedfs.policy.site import SitePolicy, load_site_policy, policy_files
from fedfs.policy.store import PolicyStore


def check_policy(cfg: Config) -> list[Finding]:
    found = []
    files = policy_files(cfg.policy.site_dir)
    try:
        site = load_site_policy(files)
        names = ", ".join(str(f) for f in files) or "none: the built-in default applies"
        found.append(Finding("site policy", OK, f"loads ({names})"))
    except FedfsError as e:
        site = SitePolicy.default()
        found.append(
            Finding(
                "site policy",
                FAIL,
                str(e),
                "correct the file as the message says (see policy/README.md); fedfs mount "
                "refuses to start with it",
            )
        )
    state = cfg.policy.state_dir
    if not state.exists():
        found.append(Finding("policy state", OK, f"{state} does not exist yet; mount creates it"))
        return found
    st = state.stat()
    if st.st_uid != 0 or stat.S_IMODE(st.st_mode) & 0o077:
        found.append(
            Finding(
                "policy state",
                WARN,
                f"{state} is {owner(st.st_uid)}'s with mode {stat.S_IMODE(st.st_mode):04o}; "
                "it holds the node's signing key and the policy database",
                f"chown root:root {state} && chmod 700 {state}",
            )
        )
    db = state / "policy.db"
    if db.exists():
        try:
            with PolicyStore(db, site.team_gids) as store:
                found.append(
                    Finding(
                        "policy database",
                        OK,
                        f"{db}: version {store.version}, {len(store.grants())} grants, "
                        f"{len(store.teams())} teams",
                    )
                )
        except FedfsError as e:
            found.append(Finding("policy database", FAIL, str(e), "see the message"))
    else:
        found.append(Finding("policy database", OK, f"{db} does not exist yet; mount creates it"))
    chain = AuditChain(state / "audit", cfg.policy.node)
    if not chain.log_path.exists():
        found.append(Finding("audit", OK, f"no audit log yet ({chain.log_path})"))
    else:
        try:
            report = chain.verify()
        except (FedfsError, OSError, ValueError, KeyError) as e:
            report = None
            reason = f"cannot read the audit chain: {e}"
        if report is not None and report.ok:
            found.append(Finding("audit", OK, f"{chain.log_path}: {report}"))
        else:
            found.append(
                Finding(
                    "audit",
                    FAIL,
                    f"{chain.log_path}: {report if report is not None else reason}",
                    "keep the file for investigation (the mount refuses to append to it); "
                    "move it aside to start a new chain",
                )
            )
    return found


def check_policy_log(cfg: Config) -> list[Finding]:
    """With a shared policy log: the control bucket, the admin keys and this node's enrolment."""
    pol = cfg.policy
    if pol.log_bucket is None:
        return []
    where = f"s3://{pol.log_bucket}/{pol.log_prefix}"
    try:
        admins = load_admin_keys(pol.admin_keys)
    except LogError as e:
        return [Finding("policy log", FAIL, str(e), "fix [policy] admin_keys")]
    log_store = LogStore(quick_store(cfg), pol.log_bucket, pol.log_prefix)
    try:
        enrolments = log_store.enrollments()
    except FedfsError as e:
        return [
            Finding(
                "policy log",
                FAIL,
                f"{where}: {e}",
                f"create the bucket {pol.log_bucket} (one per site, written only by fedfs) or "
                "fix [policy] log_bucket",
            )
        ]
    found = [Finding("policy log", OK, f"{where}: {len(enrolments)} enrolment(s)")]
    if cfg.object_acl.enabled:
        found.append(check_watchers(cfg, log_store))
    key_path = pol.state_dir / "node.key"
    if not key_path.exists():
        found.append(
            Finding(
                "node key",
                WARN,
                f"{key_path} does not exist yet, so it cannot be enrolled",
                f"fedfs admin node-key --config {cfg.path} > {pol.node}.pub, then enroll it",
            )
        )
        return found
    try:
        key_id = SigningKey.load(key_path).key_id
    except FedfsError as err:
        return [*found, Finding("node key", FAIL, str(err), "see the message")]
    mine = []
    for _, data in enrolments:
        try:
            enrolment = Enrollment.decode(data)
        except LogError:
            continue
        if enrolment.key_id == key_id and enrolment.check(admins) is None:
            mine.append(enrolment)
    enroll = (
        f"fedfs admin node-key --config {cfg.path} > {pol.node}.pub; then, with the admin key: "
        f"fedfs admin enroll-node --config {cfg.path} --admin-key ADMIN.key --node {pol.node} "
        f"{pol.node}.pub"
    )
    if not mine:
        found.append(
            Finding(
                "node key",
                WARN,
                f"key {key_id} of node {pol.node} is not enrolled in {where}: this node applies "
                "other nodes' changes but refuses to make its own",
                enroll,
            )
        )
    elif mine[0].revoked_at is not None or mine[0].node != pol.node:
        found.append(
            Finding(
                "node key",
                FAIL,
                f"key {key_id} is revoked or enrolled for node {mine[0].node}, not {pol.node}",
                "move the node key aside and enroll a new one: " + enroll,
            )
        )
    else:
        found.append(Finding("node key", OK, f"key {key_id} is enrolled for node {pol.node}"))
    return found


def check_watchers(cfg: Config, log_store: LogStore) -> Finding:
    """Whether some watcher node reads the bucket policies for the others (heartbeats)."""
    fix = (
        "set [object_acl] watcher = true on two or three nodes of the site (false on the "
        "others) and make sure they run (docs/OPERATIONS.md, Watchers)"
    )
    try:
        beats = log_store.watchers()
    except FedfsError as e:
        return Finding("watchers", WARN, f"cannot read the watcher heartbeats: {e}", fix)
    fresh = 3 * cfg.policy.list_interval
    now = time.time()
    alive = sorted(n for n, t in beats.items() if now - t <= fresh)
    if alive:
        return Finding("watchers", OK, f"{len(alive)} watcher node(s) up: {', '.join(alive)}")
    last = f" (last: {', '.join(sorted(beats))})" if beats else ""
    return Finding(
        "watchers",
        WARN,
        f"no watcher node has sent a heartbeat in the last {fresh:.0f} s{last}: changes to "
        "bucket policies and ACLs are not imported, and grants are not exported to the "
        "object store, until one runs; each node keeps the last observed rights",
        fix,
    )
