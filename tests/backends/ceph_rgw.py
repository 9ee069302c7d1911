"""A throwaway single-node Ceph cluster with the RADOS Gateway on loopback: a real S3 server.

`CephRgw(tmpdir)` runs one monitor, one OSD (bluestore on a sparse file) and
radosgw from Debian's packages (scripts/ceph-rgw-install), everything under
tmpdir and bound to 127.0.0.1: auth none, pools of size 1, debug logging off.
The daemons fork into the background and leave pid files in tmpdir/run, so
`stop()` (or `stop DIR` from another process) ends them by pid and removes
tmpdir. Bring-up takes about 16 s, most of it radosgw creating its pools.

    python -m tests.backends.ceph_rgw start DIR   # prints the endpoint and keys
    python -m tests.backends.ceph_rgw stop DIR
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

ACCESS_KEY = "fedfs-ceph-access"
SECRET_KEY = "fedfs-ceph-secret-key-0123456789"
BLOCK_SIZE = 20 * 1024**3  # sparse: about 1.8 GiB used after the comparison benchmark
# Stop the gateway first (it holds RADOS sessions), the monitor last.
STOP_ORDER = ("client.rgw.a", "osd.0", "mon.a")
_DEBUG_SUBSYSTEMS = [
    "asok",
    "auth",
    "bdev",
    "bluefs",
    "bluestore",
    "client",
    "context",
    "crush",
    "finisher",
    "heartbeatmap",
    "journal",
    "mon",
    "monc",
    "ms",
    "objclass",
    "objecter",
    "osd",
    "paxos",
    "perfcounter",
    "rados",
    "rgw",
    "rocksdb",
    "throttle",
    "timer",
    "tp",
]


class CephError(RuntimeError):
    """A Ceph daemon did not start, or a ceph command failed."""


class CephRgw:
    def __init__(self, tmpdir: Path | str) -> None:
        self.dir = Path(tmpdir).resolve()
        self.conf = self.dir / "ceph.conf"
        self.access_key = ACCESS_KEY
        self.secret_key = SECRET_KEY
        self.mon_port = _free_loopback_port()
        self.rgw_port = _free_loopback_port()
        self.url = f"http://127.0.0.1:{self.rgw_port}"
        self.bring_up_seconds: float | None = None

    def start(self, timeout: float = 120.0) -> CephRgw:
        """Create and start the cluster, the gateway and the S3 user; return once S3 answers."""
        began = time.monotonic()
        deadline = began + timeout
        try:
            self._start(deadline)
        except BaseException:
            self.stop()
            raise
        self.bring_up_seconds = time.monotonic() - began
        (self.dir / "endpoint.json").write_text(json.dumps(self.describe(), indent=2) + "\n")
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM every daemon by its pid file, wait for them (SIGKILL after timeout), remove dir."""
        stop_cluster(self.dir, timeout)

    def describe(self) -> dict[str, str]:
        return {
            "url": self.url,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "dir": str(self.dir),
            "conf": str(self.conf),
        }

    def request_counts(self) -> dict[str, int]:
        """radosgw's own counters (requests, GETs, PUTs, failures) from its admin socket."""
        out = self._run(
            "ceph", "--admin-daemon", self.dir / "run" / "client.rgw.a.asok", "perf", "dump", "rgw"
        )
        rgw = json.loads(out)["rgw"]
        return {k: int(rgw[k]) for k in ("req", "get", "put", "failed_req")}

    def client(self, access_key: str | None = None, secret_key: str | None = None) -> object:
        """A boto3 S3 client with the benchmark user's keys, or with the keys given."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
        )

    def create_user(self, uid: str, system: bool = False) -> tuple[str, str]:
        """An RGW user named uid (principal arn:aws:iam:::user/UID) with its own keys.

        system: a user meant for a site service (the fedfs daemon), which may read and
        write every bucket and its policy (../notes: RGW enforces policies per user)."""
        access, secret = f"{uid}-access"[:20], f"{uid}-secret-0123456789abcdef"
        self._run(
            "radosgw-admin",
            *self._c,
            "user",
            "create",
            f"--uid={uid}",
            f"--display-name={uid}",
            f"--access-key={access}",
            f"--secret-key={secret}",
            *(["--system"] if system else []),
        )
        return access, secret

    def set_system(self, uid: str, system: bool) -> None:
        """Make an existing user a system user, or an ordinary one again (a test taking a
        service's rights away for a while)."""
        flag = "true" if system else "false"
        self._run("radosgw-admin", *self._c, "user", "modify", f"--uid={uid}", f"--system={flag}")

    def __enter__(self) -> CephRgw:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _start(self, deadline: float) -> None:
        for sub in ("run", "log", "crash", "mon.a", "osd.0", "rgw.a"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        fsid = str(uuid.uuid4())
        self._write_config(fsid)
        keyring = self.dir / "keyring"
        self._run(
            "ceph-authtool",
            "--create-keyring",
            keyring,
            "--gen-key",
            "-n",
            "mon.",
            "--cap",
            "mon",
            "allow *",
        )
        monmap = self.dir / "monmap"
        self._run(
            "monmaptool",
            "--create",
            "--addv",
            "a",
            f"[v2:127.0.0.1:{self.mon_port}]",
            "--fsid",
            fsid,
            monmap,
        )
        self._run(
            "ceph-mon", *self._c, "--mkfs", "-i", "a", "--monmap", monmap, "--keyring", keyring
        )
        self._run("ceph-mon", *self._c, "-i", "a")

        osd_uuid = str(uuid.uuid4())
        osd_id = self._ceph("osd", "new", osd_uuid).strip()
        if osd_id != "0":
            raise CephError(f"ceph osd new gave id {osd_id!r}, expected 0")
        self._run("ceph-osd", *self._c, "-i", "0", "--mkfs", "--osd-uuid", osd_uuid)
        self._run("ceph-osd", *self._c, "-i", "0")
        self._poll(lambda: " 1 up" in self._ceph("osd", "stat"), "the OSD to be up", deadline)

        self._run("radosgw", *self._c, "-n", "client.rgw.a")
        self._poll(self._http_answers, f"radosgw to answer on {self.url}", deadline)
        self._run(
            "radosgw-admin",
            *self._c,
            "user",
            "create",
            "--uid=fedfs",
            "--display-name=fedfs benchmarks and tests",
            f"--access-key={self.access_key}",
            f"--secret-key={self.secret_key}",
        )
        self._poll(self._s3_answers, "S3 to accept the user's keys", deadline)

    @property
    def _c(self) -> tuple[str, ...]:
        return ("-c", str(self.conf))

    def _write_config(self, fsid: str) -> None:
        d = self.dir
        debug = "\n".join(f"debug_{name} = 0/0" for name in _DEBUG_SUBSYSTEMS)
        self.conf.write_text(
            f"""[global]
fsid = {fsid}
mon_initial_members = a
mon_host = v2:127.0.0.1:{self.mon_port}
public_addr = 127.0.0.1
cluster_addr = 127.0.0.1
ms_bind_msgr1 = false
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
run_dir = {d}/run
admin_socket = {d}/run/$name.asok
pid_file = {d}/run/$name.pid
log_file = {d}/log/$name.log
mon_cluster_log_file = {d}/log/cluster.log
crash_dir = {d}/crash
keyring = {d}/keyring
mon_data = {d}/$name
osd_data = {d}/$name
rgw_data = {d}/rgw.a
osd_pool_default_size = 1
osd_pool_default_min_size = 1
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
osd_crush_chooseleaf_type = 0
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
ms_crc_data = false
{debug}

[osd]
osd_objectstore = bluestore
bluestore_block_path = {d}/osd.0.block
bluestore_block_create = true
bluestore_block_size = {BLOCK_SIZE}
bluestore_csum_type = none

[client.rgw.a]
# radosgw defaults to cephx and a secure monitor session whatever [global] says.
auth_client_required = none
ms_mon_client_mode = crc
rgw_frontends = beast endpoint=127.0.0.1:{self.rgw_port} tcp_nodelay=1
"""
        )

    def _poll(self, probe: Callable[[], bool], what: str, deadline: float) -> None:
        last: object = None
        while time.monotonic() < deadline:
            try:
                if probe():
                    return
            except CephError:
                raise
            except Exception as e:  # not ready yet: keep the reason for the timeout message
                last = e
            time.sleep(0.1)
        raise CephError(f"timed out waiting for {what} (last: {last!r})\n{self._log_tails()}")

    def _run(self, *cmd: str | Path, timeout: float = 60.0) -> str:
        result = subprocess.run(
            [str(c) for c in cmd],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            cwd=self.dir,
        )
        if result.returncode != 0:
            raise CephError(
                f"{' '.join(str(c) for c in cmd)} failed with status {result.returncode}: "
                f"{(result.stderr or result.stdout).strip()[-2000:]}\n{self._log_tails()}"
            )
        return result.stdout

    def _ceph(self, *args: str) -> str:
        return self._run("ceph", *self._c, "--connect-timeout", "10", *args)

    def _http_answers(self) -> bool:
        try:
            urllib.request.urlopen(self.url, timeout=2).close()
        except urllib.error.HTTPError:
            return True  # any HTTP answer means the frontend is up
        except OSError:
            self._check_alive()
            return False
        return True

    def _s3_answers(self) -> bool:
        self.client().list_buckets()  # type: ignore[attr-defined]
        return True

    def _check_alive(self) -> None:
        for name in STOP_ORDER:
            pid = _read_pid(self.dir / "run" / f"{name}.pid")
            if pid is not None and not _alive(pid):
                raise CephError(f"{name} (pid {pid}) exited:\n{self._log_tails()}")

    def _log_tails(self, lines: int = 15) -> str:
        out = []
        for log in sorted((self.dir / "log").glob("*.log")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            if text:
                out.append(f"--- {log}\n" + "\n".join(text))
        return "\n".join(out)


def stop_cluster(directory: Path | str, timeout: float = 30.0) -> None:
    """End the daemons whose pid files are in DIR/run, then remove DIR."""
    directory = Path(directory)
    run = directory / "run"
    names = [*STOP_ORDER, *(p.stem for p in sorted(run.glob("*.pid")) if p.stem not in STOP_ORDER)]
    for name in names:
        pid = _read_pid(run / f"{name}.pid")
        if pid is None or not _alive(pid):
            continue
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(directory, ignore_errors=True)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.backends.ceph_rgw", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("dir", type=Path, help="the cluster's directory (created by start)")
    args = parser.parse_args(argv)
    if args.action == "stop":
        stop_cluster(args.dir)
        print(f"stopped the cluster in {args.dir}")
        return 0
    if args.dir.exists() and any(args.dir.iterdir()):
        print(f"{args.dir} is not empty; stop its cluster first or pick a new one", file=sys.stderr)
        return 1
    rgw = CephRgw(args.dir).start()
    for key, value in rgw.describe().items():
        print(f"{key:<11} {value}")
    print(f"bring-up    {rgw.bring_up_seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
