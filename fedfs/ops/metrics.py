"""Prometheus metrics of one mount: what is counted, and the two ways it is published.

Most numbers already live on the daemon's objects (store, cache, flusher, FUSE
adapter, policy store); a collector reads them when Prometheus scrapes or the
textfile is written, so nothing else in fedfs counts twice. Only S3 request
latency is observed as it happens, through `ObjectStore.on_call`.

Published as an HTTP endpoint (`[metrics] listen`, a worker thread of
prometheus_client's) and/or a node_exporter textfile (`[metrics] textfile`,
rewritten atomically every `interval` seconds by a task in the daemon's
nursery). The daemon's state belongs to the trio thread, so the HTTP thread
asks trio for a snapshot (`trio.from_thread`) instead of reading it itself.
Every sample carries `mount="NAME"`, so the files of several mounts on one
node do not collide in node_exporter.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

import trio
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import write_to_textfile

from fedfs import __version__
from fedfs.errors import ConfigError
from fedfs.events import event
from fedfs.tree import names

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from fedfs.config import Config
    from fedfs.data.cache import Cache
    from fedfs.data.flusher import Flusher
    from fedfs.data.writeback import WriteBack
    from fedfs.fuse.operations import Operations
    from fedfs.policy.log import PolicyLog
    from fedfs.policy.objectacl.exporter import Exporter
    from fedfs.policy.objectacl.importer import Importer
    from fedfs.policy.sharing import Sharing
    from fedfs.store.s3 import ObjectStore

log = logging.getLogger(__name__)

# Counters' *_created samples double every series and no fedfs dashboard needs them.
disable_created_metrics()

# S3 latencies span a cached HEAD on loopback to a multi-GiB multipart upload.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

# name (without _total for counters), kind, help: one per value of `Metrics.snapshot`.
FAMILIES: tuple[tuple[str, str, str], ...] = (
    ("fedfs_mounted", "gauge", "1 while the mount serves requests, 0 once it is unmounting"),
    ("fedfs_start_time_seconds", "gauge", "when the daemon started, in Unix time"),
    ("fedfs_fuse_requests", "counter", "requests from the kernel (FUSE operations)"),
    ("fedfs_read_bytes", "counter", "bytes read through the mount"),
    ("fedfs_written_bytes", "counter", "bytes written through the mount"),
    ("fedfs_cache_hits", "counter", "reads served from the cache directory"),
    ("fedfs_cache_misses", "counter", "blocks fetched from the object store into the cache"),
    ("fedfs_cache_evictions", "counter", "clean cache files evicted to make room"),
    ("fedfs_cache_size_bytes", "gauge", "the configured cache size ([cache] size)"),
    ("fedfs_cache_clean_bytes", "gauge", "cached data that is also in the object store"),
    ("fedfs_cache_dirty_bytes", "gauge", "data written and not yet in the object store"),
    ("fedfs_cache_disk_free_bytes", "gauge", "free space on the cache directory's disk"),
    ("fedfs_uploads_pending", "gauge", "files waiting for their upload"),
    ("fedfs_uploads_pending_bytes", "gauge", "bytes of the files waiting for their upload"),
    ("fedfs_uploads_failing", "gauge", "files whose last upload attempt failed (retried)"),
    ("fedfs_upload_failures", "counter", "failed upload attempts"),
    ("fedfs_uploads", "counter", "files uploaded"),
    ("fedfs_uploaded_bytes", "counter", "bytes uploaded"),
    ("fedfs_upload_conflicts", "counter", "uploads kept beside another writer's version"),
    ("fedfs_partial_rewrites", "counter", "uploads that had the store copy unchanged parts"),
    ("fedfs_partial_rewrite_copied_bytes", "counter", "bytes those copies spared sending"),
    ("fedfs_policy_version", "gauge", "the policy database's version (grows with every change)"),
    ("fedfs_policy_grants", "gauge", "grants in force"),
    ("fedfs_policy_teams", "gauge", "teams"),
    (
        "fedfs_policy_lag_seconds",
        "gauge",
        "how long the oldest policy event seen but not applied has waited (0 on a single node)",
    ),
    ("fedfs_policy_events_applied", "counter", "other nodes' policy records applied here"),
    ("fedfs_policy_events_rejected", "counter", "policy log events rejected (forged, replayed...)"),
    ("fedfs_bucket_policy_writes", "counter", "bucket policies written to mirror grants"),
    (
        "fedfs_bucket_policy_repairs",
        "counter",
        "bucket policy writes that restored statements found changed or missing by a poll",
    ),
    (
        "fedfs_bucket_policy_export_failing",
        "gauge",
        "buckets whose policy the last export could not read or write ([object_acl])",
    ),
    (
        "fedfs_bucket_policy_grants_not_exported",
        "gauge",
        "grants in force through the mount left out of a full bucket policy (max_policy_bytes)",
    ),
    ("fedfs_identity_up", "gauge", "1 while the identity source (NSS or LDAP) answers"),
    ("fedfs_hidden_keys", "gauge", "S3 keys seen by this mount that cannot be shown"),
    (
        "fedfs_object_acl_unmapped",
        "gauge",
        "bucket policy statements and ACL grants not mapped to POSIX (they give nothing)",
    ),
    (
        "fedfs_object_acl_unmapped_reported",
        "counter",
        "distinct unmappable statements reported in the log since start",
    ),
    ("fedfs_object_acl_polls", "counter", "polls of the buckets' own policies and ACLs"),
    ("fedfs_object_acl_changes", "counter", "observed changes of a bucket's policy or ACL"),
    ("fedfs_object_acl_unreadable", "gauge", "buckets whose policy or ACL could not be read"),
)


class Measured(Protocol):
    """The parts of a running mount whose numbers are published (the daemon has them)."""

    cfg: Config
    mounted: bool
    store: ObjectStore
    cache: Cache
    flusher: Flusher
    writeback: WriteBack
    ops: Operations
    sharing: Sharing
    policy_log: PolicyLog | None
    importer: Importer | None
    exporter: Exporter | None


class Metrics:
    """The registry of one mount and its HTTP endpoint and textfile."""

    def __init__(self, daemon: Measured) -> None:
        self.d = daemon
        self.cfg = daemon.cfg.metrics
        self.mount = daemon.cfg.name
        self.started = time.time()
        self.registry = CollectorRegistry()
        labels = ("mount", "operation")
        self.s3_requests = Counter(
            "fedfs_s3_requests", "S3 requests by operation", labels, registry=self.registry
        )
        self.s3_errors = Counter(
            "fedfs_s3_errors",
            "S3 requests that failed, by operation and error (NotFound is a normal answer "
            "to a lookup; Unavailable means the store did not answer)",
            (*labels, "error"),
            registry=self.registry,
        )
        self.s3_seconds = Histogram(
            "fedfs_s3_request_duration_seconds",
            "S3 request latency by operation (botocore's retries included)",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_Snapshots(self))
        daemon.store.on_call = self.observe_s3
        self.token: trio.lowlevel.TrioToken | None = None
        self.last: dict[str, float] = {}
        self.server: WSGIServer | None = None
        self._textfile_error: str | None = None

    def observe_s3(self, operation: str, seconds: float, error: str | None) -> None:
        """ObjectStore.on_call: runs in whichever thread made the request (all thread-safe)."""
        self.s3_requests.labels(self.mount, operation).inc()
        self.s3_seconds.labels(self.mount, operation).observe(seconds)
        if error is not None:
            self.s3_errors.labels(self.mount, operation, error).inc()

    def snapshot(self) -> dict[str, float]:
        """Every value of FAMILIES, read in the trio thread."""
        d = self.d
        cache = d.cache.stats()
        return {
            "fedfs_mounted": float(d.mounted),
            "fedfs_start_time_seconds": self.started,
            "fedfs_fuse_requests": d.ops.ops,
            "fedfs_read_bytes": d.ops.bytes_read,
            "fedfs_written_bytes": d.ops.bytes_written,
            "fedfs_cache_hits": cache["hits"],
            "fedfs_cache_misses": cache["misses"],
            "fedfs_cache_evictions": cache["evicted"],
            "fedfs_cache_size_bytes": cache["size"],
            "fedfs_cache_clean_bytes": cache["clean_bytes"],
            "fedfs_cache_dirty_bytes": cache["dirty_bytes"],
            "fedfs_cache_disk_free_bytes": d.cache.free_disk(),
            "fedfs_uploads_pending": len(d.flusher.pending),
            "fedfs_uploads_pending_bytes": d.flusher.queued_bytes(),
            "fedfs_uploads_failing": len(d.flusher.failed()),
            "fedfs_upload_failures": d.flusher.failures,
            "fedfs_uploads": d.flusher.uploaded,
            "fedfs_uploaded_bytes": d.flusher.uploaded_bytes,
            "fedfs_upload_conflicts": d.writeback.conflicts,
            "fedfs_partial_rewrites": d.writeback.rewrites,
            "fedfs_partial_rewrite_copied_bytes": d.writeback.rewrite_copied,
            "fedfs_policy_version": d.sharing.store.version,
            "fedfs_policy_grants": len(d.sharing.store.grants()),
            "fedfs_policy_teams": len(d.sharing.store.teams()),
            "fedfs_policy_lag_seconds": d.policy_log.lag() if d.policy_log else 0.0,
            "fedfs_policy_events_applied": d.policy_log.applied_total if d.policy_log else 0,
            "fedfs_policy_events_rejected": d.policy_log.rejected_total if d.policy_log else 0,
            **_export(d.exporter),
            "fedfs_identity_up": float(d.sharing.identity.health().ok),
            "fedfs_hidden_keys": len(names.hidden_keys()),
            **self._object_acl(),
        }

    def _object_acl(self) -> dict[str, float]:
        imp = self.d.importer
        if imp is None:
            return {}
        return {
            "fedfs_object_acl_unmapped": sum(len(u) for u in imp.unmapped.values()),
            "fedfs_object_acl_unmapped_reported": imp.unmapped_seen,
            "fedfs_object_acl_polls": imp.polls,
            "fedfs_object_acl_changes": imp.changes,
            "fedfs_object_acl_unreadable": len(imp.errors),
        }

    def current(self) -> dict[str, float]:
        """A fresh snapshot from any thread; the last one once trio has stopped."""
        try:
            trio.lowlevel.current_trio_token()
            in_trio = True
        except RuntimeError:
            in_trio = False
        if in_trio:
            self.last = self.snapshot()
        elif self.token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                self.last = trio.from_thread.run_sync(self.snapshot, trio_token=self.token)
        return self.last

    def listen(self) -> None:
        """Start the HTTP endpoint, if configured; called in the trio thread before mounting."""
        self.token = trio.lowlevel.current_trio_token()
        if self.cfg.listen is None:
            return
        host, port = self.cfg.listen
        try:
            self.server, _ = start_http_server(port, addr=host, registry=self.registry)
        except OSError as e:
            raise ConfigError(
                f"{self.d.cfg.path}: [metrics] listen: cannot listen on {host}:{port} "
                f"({e.strerror}); pick a free port"
            ) from None
        event(log, "metrics-listen", address=f"{host}:{port}")

    async def run(self) -> None:
        """Rewrite the textfile every interval until cancelled, then once more; stop HTTP."""
        try:
            while True:
                if self.cfg.textfile is not None:
                    await trio.to_thread.run_sync(self.write_textfile)
                await trio.sleep(self.cfg.interval if self.cfg.textfile else math.inf)
        finally:
            if self.server is not None:
                self.server.shutdown()
                self.server.server_close()
            if self.cfg.textfile is not None:
                self.write_textfile()  # the final counts, with fedfs_mounted 0

    def write_textfile(self) -> None:
        assert self.cfg.textfile is not None
        try:
            write_to_textfile(str(self.cfg.textfile), self.registry)
        except OSError as e:
            if str(e) != self._textfile_error:  # once per distinct problem, not every interval
                event(
                    log,
                    "metrics-textfile-failed",
                    severity=logging.WARNING,
                    path=self.cfg.textfile,
                    error=e,
                )
            self._textfile_error = str(e)
        else:
            self._textfile_error = None


class _Snapshots:
    """A prometheus_client collector that turns `Metrics.current()` into metric families."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        values = self.m.current()
        mount = self.m.mount
        info = GaugeMetricFamily(
            "fedfs_info", "fedfs version and mount", labels=["mount", "version", "config"]
        )
        info.add_metric([mount, __version__, str(self.m.d.cfg.path)], 1)
        yield info
        for name, kind, text in FAMILIES:
            if name not in values:
                continue
            family: CounterMetricFamily | GaugeMetricFamily
            if kind == "counter":
                family = CounterMetricFamily(name, text, labels=["mount"])
            else:
                family = GaugeMetricFamily(name, text, labels=["mount"])
            family.add_metric([mount], values[name])
            yield family


def _export(exporter: Exporter | None) -> dict[str, float]:
    states = exporter.state.values() if exporter is not None else ()
    return {
        "fedfs_bucket_policy_writes": sum(s.writes for s in states),
        "fedfs_bucket_policy_repairs": sum(s.repairs for s in states),
        "fedfs_bucket_policy_export_failing": sum(s.error is not None for s in states),
        "fedfs_bucket_policy_grants_not_exported": exporter.not_exported() if exporter else 0,
    }
