"""The configuration: one typed, validated object read from a TOML file.

Every later part of fedfs receives a `Config`; nothing else parses TOML. Any
mistake is a `ConfigError` naming the file, the key and what would be valid,
raised before anything is mounted.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from fedfs.errors import ConfigError

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
# S3 bucket naming rules (the DNS-compatible subset every S3 implementation accepts).
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PRINCIPAL_RE = re.compile(r"^(user|group|team):[A-Za-z0-9_.][A-Za-z0-9_.-]{0,63}$")


def parse_size(text: str | int) -> int:
    """'200GiB' -> bytes. Raises ValueError with the accepted forms."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError("a size cannot be negative")
        return text
    if not isinstance(text, str):
        raise ValueError('expected a size such as "200GiB" or "8MiB"')
    m = _SIZE_RE.match(text)
    unit = m.group(2).lower() if m else None
    if not m or unit not in _SIZE_UNITS:
        raise ValueError(
            f"{text!r} is not a size; use a number with an optional unit "
            '(B, KiB, MiB, GiB, TiB, or KB, MB, GB, TB), e.g. "200GiB"'
        )
    return int(float(m.group(1)) * _SIZE_UNITS[unit])


def format_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class StoreConfig:
    endpoint: str | None = None
    region: str = "us-east-1"
    access_key: str | None = None
    secret_key: str | None = None
    max_connections: int = 16
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_attempts: int = 5
    multipart_threshold: int = 64 * 1024**2
    multipart_chunksize: int = 16 * 1024**2
    addressing_style: str = "path"
    lean: bool = True  # HEAD and ranged GET as signed urllib3 requests (fedfs/store/lean.py)
    # A partial rewrite has the store copy a large file's unchanged parts (UploadPartCopy)
    # instead of sending them; off where the store copies slower than the client sends.
    copy_parts: bool = True
    # Server-side copies of a directory move in flight at once: the store does the work,
    # so they have their own limit (and connections) beside max_connections.
    max_copies: int = 32


@dataclass(frozen=True)
class CacheConfig:
    dir: Path
    size: int
    block_size: int = 8 * 1024**2
    readahead_blocks: int = 4
    # fetched blocks kept in memory to serve reads from while their clean file is written
    memory: int = 256 * 1024**2
    flush_delay: float = 1.0  # seconds between close() and the upload (coalesces rewrites)
    flush_busy_max: float = 5.0  # how much longer uploads may wait while the mount is busy
    fsync: str = "local"  # "local": fsync = durable in the cache; "upload": fsync waits for S3
    dirty_wait: float = 30.0  # how long a writer waits for room before ENOSPC
    # At SIGTERM, how long pending uploads may take before the daemon exits anyway (what is
    # left stays in the cache and journal for the next mount); at unmount, how long no
    # upload may finish before it gives up waiting.
    drain_timeout: float = 30.0
    high_watermark: float = 0.9
    low_watermark: float = 0.8
    uploads: int = 4  # files uploaded at once by the flusher
    write_back: bool = True  # False: close() returns only once the upload is done
    # Clean (immutable) data; may be one directory on Lustre shared by several nodes.
    clean_dir: Path | None = None  # default: DIR/clean

    @property
    def clean_path(self) -> Path:
        return self.clean_dir or self.dir / "clean"


@dataclass(frozen=True)
class FsConfig:
    attr_timeout: float = 1.0
    entry_timeout: float = 1.0
    negative_timeout: float = 1.0
    dir_timeout: float = 1.0
    allow_other: bool = True
    # files one user (not root) may hold open for writing at once: each holds a
    # descriptor of the daemon, which all users share
    open_for_writing_per_user: int = 1024
    # Keep what HEADs returned in one index object per directory in the bucket
    # (.fedfs-index/), so a listing on any node needs no HEAD per entry it describes.
    metadata_index: bool = True
    # read-ahead of the mount's kernel device, in KiB: the kernel's FUSE reads grow with it
    # (1024: 1 MiB reads instead of 128 KiB ones); 0 leaves the kernel's default
    read_ahead_kb: int = 1024


@dataclass(frozen=True)
class PolicyConfig:
    state_dir: Path  # policy database, this node's signing key and audit chain
    node: str = ""  # this node's name in the audit chain (default: the host name)
    site_dir: Path = Path("/etc/fedfs/policy.d")  # site policy files, over the shipped default
    sweep_interval: float = 60.0  # the longest the expiry sweeper sleeps
    # Several nodes (fedfs/policy/log.py): the shared policy log, off when log_bucket is None.
    log_bucket: str | None = None  # a bucket at the [store] endpoint that only fedfs writes
    log_prefix: str = "fedfs-policy/"
    poll_interval: float = 1.0  # how often the log's change marker is read (one small GET)
    list_interval: float = 60.0  # a LIST of the log even when the marker says nothing changed
    lookback: float = 10.0  # seconds of the log read again each poll, for late arrivals
    snapshot_every: int = 1000  # log records between two snapshots of the policy
    admin_keys: tuple[Path, ...] = ()  # public keys (PEM) allowed to enroll node keys


@dataclass(frozen=True)
class IdentityConfig:
    source: str = "nss"  # "nss" (the node's pwd/grp, e.g. sssd) or "ldap"
    url: str | None = None
    base_dn: str | None = None
    bind_dn: str | None = None
    password: str | None = None
    timeout: float = 5.0
    ttl: float = 300.0


@dataclass(frozen=True)
class ControlConfig:
    socket: Path


@dataclass(frozen=True)
class MetricsConfig:
    listen: tuple[str, int] | None = None  # HTTP endpoint for Prometheus; off when None
    textfile: Path | None = None  # node_exporter textfile, rewritten every `interval` s
    interval: float = 15.0
    allow_remote: bool = False  # listen on a non-loopback address (the endpoint has no auth)


@dataclass(frozen=True)
class ObjectAclConfig:
    """[object_acl]: the object store's access control and the POSIX view as one policy
    (docs/OBJECT_ACL.md). Off (fedfs as before) while `principal` and `ldap_attribute`
    are both unset."""

    # "arn:aws:iam:::user/{user}": the object-store principal of POSIX user {user}
    principal: str | None = None
    ldap_attribute: str | None = None  # or an LDAP attribute of the user holding it
    sync: str = "both"  # "both", "export" (POSIX -> store) or "import" (store -> POSIX)
    poll_interval: float = 10.0  # how often bucket policies and ACLs are read (with jitter)
    watcher: bool = True  # whether this node polls bucket policies (see docs/OPERATIONS.md)
    # the canned ACL of every object fedfs writes, so the bucket's owner keeps it usable
    object_acl: str | None = "bucket-owner-full-control"
    # the bucket policy (the owner's statements and fedfs's) is kept under this many bytes:
    # RGW takes about 1 MB, AWS 20 KB (set 20000 there); docs/OBJECT_ACL.md "Policy size"
    max_policy_bytes: int = 512 * 1024

    @property
    def enabled(self) -> bool:
        return self.principal is not None or self.ldap_attribute is not None

    @property
    def exports(self) -> bool:
        return self.enabled and self.sync in ("both", "export")

    @property
    def imports(self) -> bool:
        return self.enabled and self.sync in ("both", "import")


@dataclass(frozen=True)
class BucketConfig:
    name: str
    owner: str


@dataclass(frozen=True)
class Config:
    path: Path
    store: StoreConfig
    cache: CacheConfig
    buckets: tuple[BucketConfig, ...]
    policy: PolicyConfig
    control: ControlConfig
    fs: FsConfig = field(default_factory=FsConfig)
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    object_acl: ObjectAclConfig = field(default_factory=ObjectAclConfig)

    @property
    def name(self) -> str:
        """The mount's name: the config file's stem (climate.toml -> climate)."""
        return self.path.stem

    def bucket(self, name: str) -> BucketConfig | None:
        return next((b for b in self.buckets if b.name == name), None)


class _Section:
    """Reads one TOML table, remembering which keys were used to reject the rest."""

    def __init__(self, path: Path, name: str, data: Any) -> None:
        self.path, self.name = path, name
        if not isinstance(data, dict):
            self.fail(None, f"must be a table ([{name}]), not {type(data).__name__}")
        self.data: dict[str, Any] = data
        self.used: set[str] = set()

    def fail(self, key: str | None, why: str) -> None:
        where = f"[{self.name}]" + (f" {key}" if key else "")
        raise ConfigError(f"{self.path}: {where}: {why}")

    def get(
        self, key: str, kind: type | tuple[type, ...], default: Any = ..., what: str = ""
    ) -> Any:
        self.used.add(key)
        if key not in self.data:
            if default is ...:
                typo = difflib.get_close_matches(
                    key, [k for k in self.data if isinstance(k, str)], 1
                )
                hint = f" (is {typo[0]!r} a misspelling of it?)" if typo else ""
                self.fail(key, f"is required{hint}{'; ' + what if what else ''}")
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join(k.__name__ for k in kinds)
            self.fail(key, f"expected {names}, got {value!r}{'; ' + what if what else ''}")
        return value

    def size(self, key: str, default: Any = ...) -> int:
        value = self.get(key, (str, int), default, what='a size such as "8MiB"')
        try:
            return parse_size(value)
        except ValueError as e:
            self.fail(key, str(e))
            raise AssertionError("unreachable") from e

    def positive(self, key: str, kind: type, default: Any) -> Any:
        value = self.get(key, kind, default)
        if value <= 0:
            self.fail(key, f"must be greater than 0, got {value!r}")
        return value

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            valid = sorted(self.used)
            typo = difflib.get_close_matches(str(unknown[0]), valid, 1)
            hint = f" (did you mean {typo[0]!r}?)" if typo else ""
            self.fail(unknown[0], f"unknown key{hint}; valid keys here are: {', '.join(valid)}")


def load(path: str | Path) -> Config:
    """Read and validate a config file; raises ConfigError with file, key and fix."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file; pass the path of a fedfs TOML config") from None
    except PermissionError:
        raise  # the command says who may read it (it holds the store's credentials)
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the config file: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return parse(raw, path)


def parse(raw: dict[str, Any], path: Path) -> Config:
    top = _Section(path, "top level", raw)
    store = _parse_store(_Section(path, "store", top.get("store", dict, {})))
    cache = _parse_cache(
        _Section(path, "cache", top.get("cache", dict, what="add a [cache] table"))
    )
    fs = _parse_fs(_Section(path, "fs", top.get("fs", dict, {})))
    policy = _parse_policy(_Section(path, "policy", top.get("policy", dict, {})), path.stem)
    identity = _parse_identity(_Section(path, "identity", top.get("identity", dict, {})))
    control = _parse_control(_Section(path, "control", top.get("control", dict, {})), path.stem)
    metrics = _parse_metrics(_Section(path, "metrics", top.get("metrics", dict, {})))
    object_acl = _parse_object_acl(
        _Section(path, "object_acl", top.get("object_acl", dict, {})), identity
    )
    buckets_raw = top.get("buckets", list, what="add at least one [[buckets]] table")
    top.finish()
    if not buckets_raw:
        top.fail("buckets", "add at least one [[buckets]] table with name and owner")
    buckets = []
    for i, b in enumerate(buckets_raw):
        buckets.append(_parse_bucket(_Section(path, f"buckets #{i + 1}", b)))
    names = [b.name for b in buckets]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        top.fail("buckets", f"bucket {dup!r} is listed twice; list each bucket once")
    return Config(
        path=path,
        store=store,
        cache=cache,
        buckets=tuple(buckets),
        policy=policy,
        control=control,
        fs=fs,
        identity=identity,
        metrics=metrics,
        object_acl=object_acl,
    )


def _abs_path(s: _Section, key: str, default: str) -> Path:
    value = s.get(key, str, default)
    if not value.startswith("/"):
        s.fail(key, f"{value!r} must be an absolute path")
    return Path(value)


def _parse_policy(s: _Section, stem: str) -> PolicyConfig:
    cfg = PolicyConfig(
        state_dir=_abs_path(s, "state_dir", f"/var/lib/fedfs/{stem}"),
        site_dir=_abs_path(s, "site_dir", "/etc/fedfs/policy.d"),
        sweep_interval=s.positive("sweep_interval", float, 60.0),
        node=s.get("node", str, socket.gethostname()),
        log_bucket=s.get("log_bucket", str, None),
        log_prefix=s.get("log_prefix", str, "fedfs-policy/"),
        poll_interval=s.positive("poll_interval", float, 1.0),
        list_interval=s.positive("list_interval", float, 60.0),
        lookback=s.positive("lookback", float, 10.0),
        snapshot_every=s.positive("snapshot_every", int, 1000),
        admin_keys=tuple(
            Path(k) for k in s.get("admin_keys", list, [], what="a list of PEM file paths")
        ),
    )
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", cfg.node):
        s.fail("node", f"{cfg.node!r}: use letters, digits, '.', '_' and '-' (a host name)")
    if cfg.log_bucket is not None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", cfg.log_bucket):
            s.fail("log_bucket", f"{cfg.log_bucket!r} is not a valid S3 bucket name")
        if not cfg.admin_keys:
            s.fail(
                "admin_keys",
                "a shared policy log (log_bucket) needs the admin public keys that enroll "
                'nodes, e.g. admin_keys = ["/etc/fedfs/admin.pub"] (see `fedfs admin keygen`)',
            )
    for key in cfg.admin_keys:
        if not key.is_absolute() or not key.is_file():
            s.fail("admin_keys", f"{str(key)!r} must be an absolute path to an existing file")
    if cfg.log_prefix and not cfg.log_prefix.endswith("/"):
        s.fail("log_prefix", f"{cfg.log_prefix!r} must end with '/'")
    if cfg.lookback < cfg.poll_interval:
        s.fail("lookback", "must be at least poll_interval, or late events could be missed")
    if cfg.list_interval < cfg.poll_interval:
        s.fail("list_interval", "must be at least poll_interval (the safety LIST is the slow one)")
    s.finish()
    return cfg


def _parse_identity(s: _Section) -> IdentityConfig:
    source = s.get("source", str, "nss")
    if source not in ("nss", "ldap"):
        s.fail("source", f'{source!r}: valid values are "nss" and "ldap"')
    cfg = IdentityConfig(
        source=source,
        url=s.get("url", str, None),
        base_dn=s.get("base_dn", str, None),
        bind_dn=s.get("bind_dn", str, None),
        password=s.get("password", str, None),
        timeout=s.positive("timeout", float, 5.0),
        ttl=s.positive("ttl", float, 300.0),
    )
    if source == "ldap" and (cfg.url is None or cfg.base_dn is None):
        s.fail("url" if cfg.url is None else "base_dn", 'source = "ldap" needs url and base_dn')
    s.finish()
    return cfg


_CANNED_ACLS = ("bucket-owner-full-control", "bucket-owner-read", "private")


def _parse_object_acl(s: _Section, identity: IdentityConfig) -> ObjectAclConfig:
    principal = s.get("principal", str, None, what='a template such as "arn:aws:iam:::user/{user}"')
    if principal is not None and principal.count("{user}") != 1:
        s.fail(
            "principal",
            f'{principal!r} must contain {{user}} once, e.g. "arn:aws:iam:::user/{{user}}"',
        )
    attribute = s.get(
        "ldap_attribute", str, None, what="the LDAP attribute holding a user's principal"
    )
    if attribute is not None and identity.source != "ldap":
        s.fail("ldap_attribute", 'needs [identity] source = "ldap"; or set principal instead')
    if attribute is not None and principal is not None:
        s.fail("ldap_attribute", "set principal or ldap_attribute, not both")
    sync = s.get("sync", str, "both")
    if sync not in ("both", "export", "import"):
        s.fail("sync", f'{sync!r}: valid values are "both", "export" and "import"')
    acl = s.get("object_acl", str, "bucket-owner-full-control")
    if acl not in (*_CANNED_ACLS, "none"):
        s.fail(
            "object_acl",
            f"{acl!r}: valid values are {', '.join(map(repr, _CANNED_ACLS))} and 'none'",
        )
    cfg = ObjectAclConfig(
        principal=principal,
        ldap_attribute=attribute,
        sync=sync,
        poll_interval=s.positive("poll_interval", float, 10.0),
        watcher=s.get("watcher", bool, True),
        object_acl=None if acl == "none" else acl,
        max_policy_bytes=s.size("max_policy_bytes", 512 * 1024),
    )
    if cfg.max_policy_bytes < 1024:
        s.fail(
            "max_policy_bytes",
            f"{cfg.max_policy_bytes} bytes holds hardly a statement; use at least 1024 "
            '(the default is "512KiB"; 20000 on AWS, whose limit is 20 KB)',
        )
    s.finish()
    return cfg


def _parse_control(s: _Section, stem: str) -> ControlConfig:
    cfg = ControlConfig(socket=_abs_path(s, "socket", f"/run/fedfs/{stem}.sock"))
    if len(str(cfg.socket).encode()) > 100:
        s.fail("socket", "a Unix socket path must be shorter than 100 bytes")
    s.finish()
    return cfg


def _parse_metrics(s: _Section) -> MetricsConfig:
    listen = s.get("listen", str, None, what='an address such as "127.0.0.1:9468"')
    allow_remote = s.get("allow_remote", bool, False)
    address = None
    if listen is not None:
        host, _, port = listen.rpartition(":")
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            s.fail("listen", f'{listen!r} is not HOST:PORT, e.g. "127.0.0.1:9468"')
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback and not allow_remote:
            s.fail(
                "listen",
                f"{listen!r} is not a loopback address; the metrics endpoint has no "
                "authentication, so listen on 127.0.0.1 (and let node_exporter or a proxy "
                "publish it) or set allow_remote = true",
            )
        address = (host, int(port))
    textfile = s.get("textfile", str, None)
    if textfile is not None and (not textfile.startswith("/") or not textfile.endswith(".prom")):
        s.fail(
            "textfile",
            f"{textfile!r} must be an absolute path ending in .prom (node_exporter's textfile "
            'collector reads only *.prom), e.g. "/var/lib/node_exporter/textfile/fedfs.prom"',
        )
    cfg = MetricsConfig(
        listen=address,
        textfile=Path(textfile) if textfile else None,
        interval=s.positive("interval", float, 15.0),
        allow_remote=allow_remote,
    )
    s.finish()
    return cfg


def _parse_store(s: _Section) -> StoreConfig:
    endpoint = s.get("endpoint", str, None)
    if endpoint is not None:
        u = urlparse(endpoint)
        if u.scheme not in ("http", "https") or not u.hostname:
            s.fail("endpoint", f"{endpoint!r} is not an http(s) URL such as http://127.0.0.1:9000")
        try:
            u.port  # noqa: B018 - raises on a bad port
        except ValueError:
            s.fail("endpoint", f"{endpoint!r} has an invalid port")
    access_key = s.get("access_key", str, None)
    secret_key = s.get("secret_key", str, None)
    style = s.get("addressing_style", str, "path")
    if style not in ("path", "virtual", "auto"):
        s.fail("addressing_style", f"{style!r}: valid values are path, virtual, auto")
    chunk = s.size("multipart_chunksize", "16MiB")
    if chunk < 5 * 1024**2:
        s.fail("multipart_chunksize", "S3 needs parts of at least 5MiB")
    cfg = StoreConfig(
        endpoint=endpoint,
        region=s.get("region", str, "us-east-1"),
        access_key=access_key,
        secret_key=secret_key,
        max_connections=s.positive("max_connections", int, 16),
        connect_timeout=s.positive("connect_timeout", float, 5.0),
        read_timeout=s.positive("read_timeout", float, 30.0),
        max_attempts=s.positive("max_attempts", int, 5),
        multipart_threshold=s.size("multipart_threshold", "64MiB"),
        multipart_chunksize=chunk,
        addressing_style=style,
        lean=s.get("lean", bool, True),
        copy_parts=s.get("copy_parts", bool, True),
        max_copies=s.positive("max_copies", int, 32),
    )
    s.finish()  # a misspelt key is named first: it explains a missing one
    if (access_key is None) != (secret_key is None):
        s.fail(
            "secret_key" if secret_key is None else "access_key",
            "set both access_key and secret_key, or neither (to use AWS_* variables or a profile)",
        )
    return cfg


def _parse_cache(s: _Section) -> CacheConfig:
    d = s.get("dir", str, what="a directory for staging and cached data")
    if not d.startswith("/"):
        s.fail("dir", f"{d!r} must be an absolute path")
    clean = s.get("clean_dir", str, None, what="a directory for clean data, may be shared")
    if clean is not None and not clean.startswith("/"):
        s.fail("clean_dir", f"{clean!r} must be an absolute path")
    block = s.size("block_size", "8MiB")
    if block < 1024**2 or block & (block - 1):
        s.fail("block_size", 'must be a power of two of at least 1MiB, e.g. "8MiB"')
    fsync = s.get("fsync", str, "local")
    if fsync not in ("local", "upload"):
        s.fail("fsync", f'{fsync!r}: valid values are "local" (durable in the cache) and "upload"')
    high = s.get("high_watermark", float, 0.9)
    low = s.get("low_watermark", float, 0.8)
    if not 0 < low < high <= 1:
        s.fail(
            "low_watermark", f"need 0 < low_watermark < high_watermark <= 1, got {low} and {high}"
        )
    delay = s.get("flush_delay", float, 1.0)
    if not 0 <= delay <= 3600:
        s.fail("flush_delay", f"must be between 0 and 3600 seconds, got {delay}")
    busy = s.get("flush_busy_max", float, 5.0)
    if not 0 <= busy <= 3600:
        s.fail("flush_busy_max", f"must be between 0 and 3600 seconds, got {busy}")
    cfg = CacheConfig(
        dir=Path(d),
        size=s.size("size"),
        block_size=block,
        readahead_blocks=s.get("readahead_blocks", int, 4),
        memory=s.size("memory", "256MiB"),
        flush_delay=delay,
        flush_busy_max=busy,
        fsync=fsync,
        dirty_wait=s.positive("dirty_wait", float, 30.0),
        drain_timeout=s.positive("drain_timeout", float, 30.0),
        high_watermark=high,
        low_watermark=low,
        uploads=s.positive("uploads", int, 4),
        write_back=s.get("write_back", bool, True),
        clean_dir=Path(clean) if clean else None,
    )
    if cfg.size < 4 * block:
        s.fail("size", f"must hold at least 4 blocks ({format_size(4 * block)})")
    s.finish()
    return cfg


def _parse_fs(s: _Section) -> FsConfig:
    def ttl(key: str, default: float) -> float:
        v = s.get(key, float, default)
        if v < 0 or v > 3600:
            s.fail(key, f"must be between 0 and 3600 seconds, got {v}")
        return float(v)

    cfg = FsConfig(
        attr_timeout=ttl("attr_timeout", 1.0),
        entry_timeout=ttl("entry_timeout", 1.0),
        negative_timeout=ttl("negative_timeout", 1.0),
        dir_timeout=ttl("dir_timeout", 1.0),
        allow_other=s.get("allow_other", bool, True),
        open_for_writing_per_user=s.positive("open_for_writing_per_user", int, 1024),
        metadata_index=s.get("metadata_index", bool, True),
        read_ahead_kb=s.get("read_ahead_kb", int, 1024),
    )
    if not 0 <= cfg.read_ahead_kb <= 65536:
        s.fail("read_ahead_kb", f"must be between 0 and 65536 KiB, got {cfg.read_ahead_kb}")
    s.finish()
    return cfg


def _parse_bucket(s: _Section) -> BucketConfig:
    name = s.get("name", str, what="the S3 bucket name")
    if not _BUCKET_RE.match(name) or ".." in name:
        s.fail("name", f"{name!r} is not a valid S3 bucket name (3-63 of a-z, 0-9, '.', '-')")
    owner = s.get("owner", str, what='who owns the bucket, e.g. "user:alice"')
    if not _PRINCIPAL_RE.match(owner):
        s.fail("owner", f"{owner!r}: use user:NAME, group:NAME or team:NAME")
    s.finish()
    return BucketConfig(name=name, owner=owner)
