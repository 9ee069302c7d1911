"""Prometheus metrics: the HTTP endpoint and the textfile parse, and their counters move with I/O."""

from __future__ import annotations

import os
import socket
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.support import FEDFS, REPO, Mount, free_port, wait_for

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, by name and labels."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return parse(r.read().decode())


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FEDFS, *map(str, args)], capture_output=True, text=True, cwd=REPO, timeout=120
    )


def test_endpoint_and_textfile_count_the_io_through_the_mount(
    make_mount: Any, bucket: str, s3: Any, tmp_path: Path
) -> None:
    port = free_port()
    textfile = tmp_path / "textfile" / "fedfs_m0.prom"
    textfile.parent.mkdir()
    m: Mount = make_mount(
        [(bucket, "user:root")],
        top=f'[metrics]\nlisten = "127.0.0.1:{port}"\ntextfile = "{textfile}"\ninterval = 0.2',
        name="m0",
    )
    before = scrape(port)
    assert total(before, "fedfs_mounted", mount="m0") == 1
    assert total(before, "fedfs_info", mount="m0") == 1

    data = os.urandom(1024 * 1024)
    (m.path(bucket, "out.bin")).write_bytes(data)
    assert cli("sync", m.mountpoint).returncode == 0
    s3.put_object(Bucket=bucket, Key="in.bin", Body=data)
    assert cli("stage", m.path(bucket, "in.bin")).returncode == 0  # into the cache (misses)
    assert m.path(bucket, "in.bin").read_bytes() == data  # out of the cache (hits)

    after = scrape(port)
    grew = lambda name, by=1.0, **labels: (  # noqa: E731
        total(after, name, **labels) - total(before, name, **labels) >= by
    )
    assert grew("fedfs_written_bytes_total", len(data))
    assert grew("fedfs_read_bytes_total", len(data))
    assert grew("fedfs_fuse_requests_total", 10)
    assert grew("fedfs_s3_requests_total")
    assert grew("fedfs_s3_requests_total", operation="put_object")
    assert grew("fedfs_s3_request_duration_seconds_count", operation="put_object")
    assert grew("fedfs_s3_errors_total", operation="head_object", error="NotFound")  # lookups
    assert grew("fedfs_cache_hits_total")
    assert grew("fedfs_cache_misses_total")
    assert grew("fedfs_uploads_total")
    assert grew("fedfs_uploaded_bytes_total", len(data))
    assert total(after, "fedfs_uploads_pending") == 0
    assert total(after, "fedfs_uploads_failing") == 0
    assert total(after, "fedfs_identity_up") == 1
    assert total(after, "fedfs_policy_lag_seconds") == 0
    assert total(after, "fedfs_cache_size_bytes") == 4 * 1024**3

    # The textfile is rewritten every interval with the same numbers, for node_exporter.
    def textfile_caught_up() -> Samples:
        samples = parse(textfile.read_text())
        ok = total(samples, "fedfs_cache_hits_total", mount="m0") >= total(
            after, "fedfs_cache_hits_total"
        )
        return samples if ok else {}

    samples = wait_for(textfile_caught_up, "the textfile to show the reads", timeout=10)
    assert total(samples, "fedfs_written_bytes_total") >= len(data)
    assert total(samples, "fedfs_s3_requests_total") >= total(after, "fedfs_s3_requests_total")
    assert not list(textfile.parent.glob("*.prom.*")), "a temporary file was left behind"

    # Unmounting writes the file once more, saying so.
    assert m.stop() == 0
    assert total(parse(textfile.read_text()), "fedfs_mounted", mount="m0") == 0


def test_a_busy_metrics_port_stops_the_mount_with_the_key_named(
    make_mount: Any, bucket: str
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        m: Mount = make_mount(
            [(bucket, "user:root")], top=f'[metrics]\nlisten = "127.0.0.1:{port}"', start=False
        )
        m.mountpoint.mkdir(parents=True, exist_ok=True)
        r = cli("mount", "--foreground", "--config", m.config, m.mountpoint)
    assert r.returncode == 1, r
    assert "[metrics] listen" in r.stderr and "pick a free port" in r.stderr
    assert not os.path.ismount(m.mountpoint)
