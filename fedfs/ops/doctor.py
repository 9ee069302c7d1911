"""`fedfs doctor`: checks one config against the world and says how to fix each problem.

Owns the list of checks an admin runs before (or instead of) guessing: the
config, the endpoint, the credentials, the clock, each bucket and the keys in
it that fedfs cannot show, the identity source and the bucket owners, the
cache directory and its disk, FUSE, the policy files and database, the audit
chain, the metrics outputs, and the running daemon if its control socket
answers. Needs no mount; changes nothing (it does not even create the cache
directory). Every S3 request is tried once with short timeouts, so a dead
endpoint costs seconds. Each check gives one `Finding`: OK, WARN or FAIL
(SKIP when what it needs failed first), what was found, and the fix.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pwd
import shutil
import socket
import stat
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from fedfs import config
from fedfs.audit.chain import AuditChain
from fedfs.config import CacheConfig, Config, MetricsConfig, format_size
from fedfs.errors import AccessDenied, FedfsError, NotFound
from fedfs.identity.choose import make_identity
from fedfs.policy.model import Principal
from fedfs.policy.site import SitePolicy, load_site_policy, policy_files
from fedfs.policy.store import PolicyStore
from fedfs.store.s3 import ObjectStore, Probe
from fedfs.tree.names import key_problem

OK, WARN, FAIL, SKIP = "OK", "WARN", "FAIL", "SKIP"
MAX_KEYS = 100_000  # keys listed per bucket when looking for names fedfs hides
SKEW_WARN = 30.0  # seconds; S3 refuses signatures beyond 15 minutes
SKEW_FAIL = 300.0
_BAD_KEYS = {"InvalidAccessKeyId", "InvalidClientTokenId", "UnrecognizedClientException"}
_BAD_SECRET = {"SignatureDoesNotMatch", "InvalidSignature", "IncompleteSignature"}
_SKEWED = {"RequestTimeTooSkewed", "RequestExpired"}


@dataclass(frozen=True)
class Finding:
    check: str
    status: str
    found: str
    fix: str = ""
    details: tuple[str, ...] = ()  # e.g. the hidden keys, one per line


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
    found += check_identity(cfg)
    found += check_cache(cfg.cache)
    found += check_fuse(cfg.fs.allow_other, fuse_dev, fuse_conf)
    found += check_policy(cfg)
    found += check_policy_log(cfg)
    found += check_metrics(cfg.metrics, daemon_runs=found[1].status == OK)
    return found


# -- the object store ----------------------------------------------------------------


def _quick_store(cfg: Config) -> ObjectStore:
    """The config's store with one attempt per request and short timeouts: bounded checks."""
    s = cfg.store
    quick = dataclasses.replace(
        s,
        max_attempts=1,
        connect_timeout=min(s.connect_timeout, 5.0),
        read_timeout=min(s.read_timeout, 30.0),
    )
    return ObjectStore(quick)


def check_store(cfg: Config, max_keys: int = MAX_KEYS) -> list[Finding]:
    endpoint = cfg.store.endpoint or f"AWS S3 ({cfg.store.region})"
    store = _quick_store(cfg)
    started = time.monotonic()
    try:
        probe = store.probe()
    except FedfsError as e:
        return _unanswered(cfg, store, e)
    ms = (time.monotonic() - started) * 1000
    found = [Finding("endpoint", OK, f"{endpoint} answered in {ms:.0f} ms")]
    found.append(_credentials(cfg, probe))
    found.append(check_clock(probe.server_time, time.time(), probe.code))
    if found[1].status == FAIL:
        found += [
            Finding(f"bucket {b.name}", SKIP, "not checked: the credentials were refused")
            for b in cfg.buckets
        ]
        return found
    for b in cfg.buckets:
        bucket = _check_bucket(cfg, store, b.name)
        found.append(bucket)
        if bucket.status == OK:
            found.append(check_names(store, b.name, max_keys))
    return found


def _unanswered(cfg: Config, store: ObjectStore, error: FedfsError) -> list[Finding]:
    """What to say when ListBuckets got no answer: no endpoint, or nothing to sign with."""
    endpoint = cfg.store.endpoint or f"AWS S3 ({cfg.store.region})"
    checks = ("credentials", "clock", *(f"bucket {b.name}" for b in cfg.buckets))

    def dead(why: object) -> Finding:
        return Finding(
            "endpoint",
            FAIL,
            f"{endpoint} did not answer within {store.cfg.connect_timeout:g} s: {why}",
            "start the S3 service, or correct [store] endpoint (scheme, host and port); "
            f"from this node, `curl -sI {cfg.store.endpoint or 'https://s3.amazonaws.com'}` "
            "must print an HTTP status",
        )

    if not isinstance(error, AccessDenied):
        skipped = [Finding(c, SKIP, "not checked: the endpoint did not answer") for c in checks]
        return [dead(error), *skipped]
    # No credentials: nothing was sent, so only a TCP connection can test the endpoint.
    reached = (
        Finding("endpoint", OK, f"{endpoint} accepts connections")
        if _connects(cfg, store.cfg.connect_timeout)
        else dead("no TCP connection")
    )
    return [
        reached,
        Finding(
            "credentials",
            FAIL,
            str(error),
            "set [store] access_key and secret_key, or AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY in the mount's environment",
        ),
        *(Finding(c, SKIP, "not checked: no credentials") for c in checks[1:]),
    ]


def _connects(cfg: Config, timeout: float) -> bool:
    """A TCP connection to the endpoint: all that can be tried without credentials."""
    url = urlparse(cfg.store.endpoint or f"https://s3.{cfg.store.region}.amazonaws.com")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout=timeout).close()
    except OSError:
        return False
    return True


def _credentials(cfg: Config, probe: Probe) -> Finding:
    key = cfg.store.access_key or os.environ.get("AWS_ACCESS_KEY_ID") or "(from the AWS profile)"
    fix_keys = (
        "set [store] access_key and secret_key (or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) "
        "to a key pair this store issued"
    )
    if probe.code in _BAD_KEYS:
        return Finding(
            "credentials",
            FAIL,
            f"the store does not know access key {key} ({probe.code}: {probe.message})",
            fix_keys,
        )
    if probe.code in _BAD_SECRET:
        return Finding(
            "credentials",
            FAIL,
            f"the secret key does not match access key {key} ({probe.code}: {probe.message})",
            "correct [store] secret_key (it must belong to the same key pair as access_key)",
        )
    if probe.code in _SKEWED:
        return Finding("credentials", SKIP, "not checked: the store refused our clock (see clock)")
    if probe.code in (None, "AccessDenied", "403"):
        note = (
            ""
            if probe.code is None
            else " (it may not list all buckets, which fedfs does not need)"
        )
        return Finding("credentials", OK, f"access key {key} accepted{note}")
    return Finding(
        "credentials",
        WARN,
        f"the store answered {probe.code}: {probe.message}; the key could not be checked",
        "look at the S3 service's log for this request",
    )


def check_clock(server_time: float | None, local_time: float, code: str | None = None) -> Finding:
    """Compare the store's Date header with our clock: S3 refuses signatures 15 min off."""
    fix = "synchronise this node's clock (chronyc tracking; systemctl enable --now chrony)"
    if server_time is None:
        if code in _SKEWED:
            return Finding("clock", FAIL, f"the store refused our request time ({code})", fix)
        return Finding("clock", WARN, "the store's answer had no Date header; skew not measured")
    # The Date header drops the fraction of its second: compare with the middle of it.
    skew = local_time - (server_time + 0.5)
    direction = "ahead of" if skew > 0 else "behind"
    text = f"this node's clock is {abs(skew):.0f} s {direction} the store's"
    if abs(skew) < 1.5:
        text = "this node's clock agrees with the store's (within the Date header's 1 s)"
    if abs(skew) > SKEW_FAIL or code in _SKEWED:
        return Finding(
            "clock", FAIL, f"{text}; S3 refuses requests signed more than 15 min off", fix
        )
    if abs(skew) > SKEW_WARN:
        return Finding("clock", WARN, f"{text} (more than {SKEW_WARN:.0f} s)", fix)
    return Finding("clock", OK, text)


def _check_bucket(cfg: Config, store: ObjectStore, bucket: str) -> Finding:
    check = f"bucket {bucket}"
    try:
        store.list_page(bucket, "", max_keys=1, delimiter=None)
    except NotFound:
        return Finding(
            check,
            FAIL,
            f"bucket {bucket!r} does not exist at {cfg.store.endpoint or 'AWS S3'}",
            f"create it (aws s3 mb s3://{bucket}) or correct [[buckets]] name in {cfg.path}",
        )
    except AccessDenied as e:
        return Finding(
            check,
            FAIL,
            f"the key may not list {bucket!r}: {e}",
            "allow this key s3:ListBucket, s3:GetObject, s3:PutObject and s3:DeleteObject "
            "on the bucket (bucket policy or the key's user policy)",
        )
    except FedfsError as e:
        return Finding(check, FAIL, str(e), "look at the S3 service's log for this bucket")
    return Finding(check, OK, "exists and is listable")


def check_names(store: ObjectStore, bucket: str, max_keys: int = MAX_KEYS) -> Finding:
    """Keys fedfs does not show (README: "listed by fedfs doctor"), from a bounded listing."""
    hidden: list[tuple[str, str]] = []
    seen = 0
    complete = True
    try:
        for page in store.list_all(bucket, "", delimiter=None):
            for obj in page.objects:
                if seen >= max_keys:
                    complete = False
                    break
                seen += 1
                problem = key_problem(obj.key)
                if problem:
                    hidden.append((obj.key, problem))
            if not complete:
                break
    except FedfsError as e:
        return Finding(f"keys {bucket}", WARN, f"listing stopped: {e}", "run fedfs doctor again")
    check = f"keys {bucket}"
    scope = f"{seen} key(s) checked" if complete else f"stopped after {seen} keys (--max-keys)"
    if hidden:
        return Finding(
            check,
            WARN,
            f"{len(hidden)} key(s) cannot be file names and are not shown ({scope})",
            "rename them with an S3 tool so that every '/'-separated part is a valid file name "
            f"(not empty, not '.' or '..', at most 255 bytes), e.g. "
            f"aws s3 mv 's3://{bucket}/{hidden[0][0]}' 's3://{bucket}/NEW-NAME'; until then they "
            "stay untouched in the bucket",
            tuple(f"{key!r}: {problem}" for key, problem in hidden),
        )
    if not complete:
        return Finding(
            check,
            WARN,
            f"no hidden keys among the first {seen}; the rest was not checked",
            "run fedfs doctor --max-keys N with N above the bucket's key count to check all",
        )
    return Finding(check, OK, f"every key can be shown ({scope})")


# -- identities ----------------------------------------------------------------------


def check_identity(cfg: Config) -> list[Finding]:
    identity = make_identity(cfg)
    results: list[tuple[Principal, str, bool | None]] = []
    for b in cfg.buckets:
        p = Principal.parse(b.owner)
        if p.kind == "user":
            results.append((p, b.name, identity.user(p.name) is not None))
        elif p.kind == "group":
            results.append((p, b.name, identity.group(p.name) is not None))
        else:
            results.append((p, b.name, _team_exists(cfg, p.name)))
    health = identity.health()
    found = []
    if cfg.identity.source == "ldap":
        if health.ok:
            found.append(Finding("identity", OK, f"{health.source} answers"))
        else:
            found.append(
                Finding(
                    "identity",
                    FAIL,
                    f"{health.source}: {health.last_error}",
                    "check that the LDAP server runs and [identity] url, base_dn, bind_dn and "
                    f"password; `ldapsearch -H {cfg.identity.url} -x -b {cfg.identity.base_dn}` "
                    "from this node must answer",
                )
            )
    else:
        found.append(Finding("identity", OK, "NSS (this node's passwd and group, e.g. sssd)"))
    for p, bucket, exists in results:
        check = f"owner {bucket}"
        if p.kind == "team":
            if exists:
                found.append(Finding(check, OK, f"{p} exists in the policy database"))
            else:
                found.append(
                    Finding(
                        check,
                        WARN,
                        f"{p} does not exist yet; until it does, only site admins manage the bucket",
                        f"create it on the mount: fedfs team create {p.name}",
                    )
                )
        elif exists:
            found.append(Finding(check, OK, f"{p} exists ({health.source})"))
        elif not health.ok:
            found.append(Finding(check, SKIP, f"{p}: not checked: the identity source is down"))
        else:
            found.append(
                Finding(
                    check,
                    FAIL,
                    f"no {p.kind} {p.name!r} ({health.source}); fedfs mount refuses to start",
                    f"create the {p.kind}, or correct [[buckets]] owner in {cfg.path} "
                    f"(`getent {'passwd' if p.kind == 'user' else 'group'} {p.name}` must find it)",
                )
            )
    return found


def _team_exists(cfg: Config, team: str) -> bool:
    db = cfg.policy.state_dir / "policy.db"
    if not db.exists():
        return False
    try:
        with PolicyStore(db, SitePolicy.default().team_gids) as store:
            return store.team(team) is not None
    except FedfsError:
        return False  # check_policy reports the damage


# -- the cache directory ------------------------------------------------------------


def _existing_ancestor(path: Path) -> Path:
    while not os.path.lexists(path) and path.parent != path:
        path = path.parent
    return path


def _owner(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def check_cache(cfg: CacheConfig, owner_uid: int = 0) -> list[Finding]:
    """The cache directory as the daemon (root) will use it, and room on its disk."""
    d = cfg.dir
    fix_perm = f"chown root:root {d} && chmod 700 {d}"
    try:
        st = d.lstat()
    except FileNotFoundError:
        parent = _existing_ancestor(d)
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            dir_finding = Finding(
                "cache dir",
                FAIL,
                f"{d} does not exist and cannot be created under {parent}",
                f"mkdir -p -m 700 {d} as root, or point [cache] dir elsewhere",
            )
        else:
            dir_finding = Finding("cache dir", OK, f"{d} does not exist yet; mount creates it 0700")
        return [dir_finding, check_cache_space(cfg, parent)]
    except OSError as e:
        return [Finding("cache dir", FAIL, f"{d}: {e.strerror}", "check [cache] dir")]
    if stat.S_ISLNK(st.st_mode):
        return [
            Finding(
                "cache dir",
                FAIL,
                f"{d} is a symbolic link (to {os.readlink(d)}); fedfs refuses it, since a link "
                "can redirect cached data",
                f"set [cache] dir to the real directory ({d.resolve()}) or replace the link",
            )
        ]
    if not stat.S_ISDIR(st.st_mode):
        return [
            Finding(
                "cache dir", FAIL, f"{d} is not a directory", "point [cache] dir at a directory"
            )
        ]
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid != owner_uid:
        dir_finding = Finding(
            "cache dir",
            FAIL,
            f"{d} is owned by {_owner(st.st_uid)}, not root: its owner could read every "
            "cached file past the share grants, and fedfs mount refuses it",
            f"{fix_perm}, or use a directory only fedfs writes to",
        )
    elif mode & 0o022:
        dir_finding = Finding(
            "cache dir",
            FAIL,
            f"{d} has mode {mode:04o}: others may plant or remove files in it",
            fix_perm,
        )
    elif mode & 0o077:
        dir_finding = Finding(
            "cache dir",
            WARN,
            f"{d} has mode {mode:04o}, not 0700: others can list it (mount resets it to 0700)",
            f"chmod 700 {d}",
        )
    else:
        dir_finding = Finding("cache dir", OK, f"{d}: a directory of root's, mode 0700")
    found = [dir_finding]
    for sub in ("staging", "clean"):
        p = d / sub
        if os.path.lexists(p):
            sst = p.lstat()
            if not stat.S_ISDIR(sst.st_mode) or sst.st_uid != owner_uid:
                what = "a link" if stat.S_ISLNK(sst.st_mode) else "not a directory"
                if stat.S_ISDIR(sst.st_mode):
                    what = f"owned by {_owner(sst.st_uid)}"
                found.append(
                    Finding(
                        "cache dir",
                        FAIL,
                        f"{p} is {what}; fedfs needs a directory of root's there",
                        f"remove {p}; fedfs mount creates it",
                    )
                )
    found.append(check_cache_space(cfg, d))
    return found


def _bytes_below(d: Path, limit: int = 1_000_000) -> int:
    """Bytes in the cache's files (staging and clean), from at most `limit` entries."""
    total, count = 0, 0
    for sub in ("staging", "clean"):
        stack = [d / sub]
        while stack and count < limit:
            try:
                with os.scandir(stack.pop()) as it:
                    for e in it:
                        count += 1
                        if e.is_dir(follow_symlinks=False):
                            stack.append(Path(e.path))
                        elif e.is_file(follow_symlinks=False):
                            total += e.stat(follow_symlinks=False).st_size
            except OSError:
                continue
    return total


def check_cache_space(cfg: CacheConfig, where: Path) -> Finding:
    """Free space plus what the cache already holds must fit [cache] size."""
    try:
        vfs = os.statvfs(where)
    except OSError as e:
        return Finding("cache space", FAIL, f"cannot read {where}'s filesystem: {e.strerror}")
    free = vfs.f_bavail * vfs.f_frsize
    used = _bytes_below(cfg.dir) if where == cfg.dir else 0
    room = free + used
    text = (
        f"{format_size(free)} free on the disk of {where}"
        + (f" plus {format_size(used)} already cached" if used else "")
        + f", for a [cache] size of {format_size(cfg.size)}"
    )
    if room < cfg.size:
        return Finding(
            "cache space",
            FAIL,
            f"{text}: writers get ENOSPC before the cache is full",
            f'lower [cache] size to at most "{int(room * 0.9) // 1024**2}MiB", or free space '
            f"on that filesystem (df -h {where})",
        )
    return Finding("cache space", OK, text)


# -- FUSE ---------------------------------------------------------------------------


def check_fuse(
    allow_other: bool,
    dev: Path = Path("/dev/fuse"),
    conf: Path = Path("/etc/fuse.conf"),
    euid: int | None = None,
    which: Callable[[str], str | None] = shutil.which,
) -> list[Finding]:
    """The FUSE device, the fusermount3 helper, and user_allow_other where it is needed."""
    euid = os.geteuid() if euid is None else euid
    found = []
    try:
        st = dev.stat()
    except FileNotFoundError:
        found.append(
            Finding(
                "fuse device",
                FAIL,
                f"{dev} is missing",
                "load the module (modprobe fuse; list it in /etc/modules-load.d/fuse.conf); "
                "in a container, pass the device (--device /dev/fuse)",
            )
        )
    else:
        if not stat.S_ISCHR(st.st_mode):
            found.append(
                Finding(
                    "fuse device",
                    FAIL,
                    f"{dev} is not a character device",
                    f"remove it and load the module (rm {dev}; modprobe fuse)",
                )
            )
        else:
            try:
                os.close(os.open(dev, os.O_RDWR | os.O_CLOEXEC))
                found.append(Finding("fuse device", OK, f"{dev} opens"))
            except OSError as e:
                found.append(
                    Finding(
                        "fuse device",
                        FAIL,
                        f"{dev} exists but cannot be opened: {e.strerror}",
                        "in a container, allow the device (--device /dev/fuse, or the device "
                        "cgroup rule c 10:229 rwm); outside one, run fedfs as root",
                    )
                )
    tool = which("fusermount3")
    if tool:
        found.append(Finding("fusermount3", OK, tool))
    else:
        found.append(
            Finding(
                "fusermount3",
                WARN if euid == 0 else FAIL,
                "fusermount3 is not installed: fedfs umount falls back to umount, and only "
                "root can mount",
                "install FUSE 3 (apt-get install fuse3; dnf install fuse3)",
            )
        )
    if not allow_other:
        found.append(Finding("allow_other", OK, "[fs] allow_other = false: only root sees files"))
    elif euid == 0:
        found.append(Finding("allow_other", OK, "mounted by root: needs no user_allow_other"))
    else:
        try:
            lines = [ln.split("#")[0].strip() for ln in conf.read_text().splitlines()]
        except OSError:
            lines = []
        if "user_allow_other" in lines:
            found.append(Finding("allow_other", OK, f"{conf} has user_allow_other"))
        else:
            found.append(
                Finding(
                    "allow_other",
                    FAIL,
                    f"[fs] allow_other is on and fedfs does not run as root, but {conf} lacks "
                    "user_allow_other: the mount fails",
                    f"echo user_allow_other >> {conf}, or run fedfs as root",
                )
            )
    return found


# -- policy, audit, metrics, daemon ---------------------------------------------------


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
                f"{state} is {_owner(st.st_uid)}'s with mode {stat.S_IMODE(st.st_mode):04o}; "
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
    from fedfs.audit.chain import SigningKey
    from fedfs.policy.log import Enrollment, LogError, LogStore, load_admin_keys

    pol = cfg.policy
    if pol.log_bucket is None:
        return []
    where = f"s3://{pol.log_bucket}/{pol.log_prefix}"
    try:
        admins = load_admin_keys(pol.admin_keys)
    except LogError as e:
        return [Finding("policy log", FAIL, str(e), "fix [policy] admin_keys")]
    log_store = LogStore(_quick_store(cfg), pol.log_bucket, pol.log_prefix)
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


def check_daemon(cfg: Config) -> list[Finding]:
    """If this config is mounted, what its daemon says about itself."""
    from fedfs.control.client import ControlClient

    sock = cfg.control.socket
    if not sock.exists():
        return [Finding("daemon", SKIP, f"not mounted (no {sock}); checked the config only")]
    try:
        with ControlClient(sock, timeout=10) as c:
            s = c.call("status")
    except (FedfsError, OSError) as e:
        return [
            Finding(
                "daemon",
                WARN,
                f"{sock} exists but does not answer: {e}",
                f"if no fedfs process serves {cfg.path}, remove {sock}; fedfs mount makes a new one",
            )
        ]
    found = [
        Finding(
            "daemon",
            OK,
            f"mounted on {s['mountpoint']} for {s['uptime']:.0f} s; "
            f"{s['uploads']['queued']} uploads queued",
        )
    ]
    if s["uploads"]["failed"]:
        found.append(
            Finding(
                "uploads",
                WARN,
                f"{s['uploads']['failed']} file(s) failing to upload (retried; the data is kept "
                "in the cache)",
                f"fedfs sync {s['mountpoint']} names them and why",
            )
        )
    if not s["identity"]["ok"]:
        found.append(
            Finding(
                "daemon identity",
                WARN,
                f"the mount's identity source is down: {s['identity']['last_error']}",
                "see the identity check above",
            )
        )
    return found


# -- output ---------------------------------------------------------------------------


def _lines(findings: list[Finding], details: int = 20) -> Iterator[str]:
    width = max(len(f.check) for f in findings)
    for f in findings:
        yield f"{f.status:<5} {f.check:<{width}}  {f.found}"
        pad = " " * (6 + width + 2)
        for d in f.details[:details]:
            yield f"{pad}  {d}"
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
