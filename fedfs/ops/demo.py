"""The embedded default: a local S3 endpoint on loopback and a mounted demo bucket.

`fedfs demo` starts moto's S3 server (in memory, 127.0.0.1 only), creates the
bucket `demo`, writes a config under the state directory and mounts it.
`fedfs demo --stop` unmounts and stops the server. For trying fedfs, not for data.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from fedfs.errors import FedfsError

DEMO_KEY = "fedfs-demo"
DEFAULT_MOUNTPOINT = Path("/mnt/fedfs")
DEFAULT_STATE = Path("/var/lib/fedfs-demo")
CONFIG = """\
# fedfs demo: a local, in-memory S3 server (moto) on loopback.
[store]
endpoint = "http://127.0.0.1:{port}"
region = "us-east-1"
access_key = "{key}"
secret_key = "{key}"

[cache]
dir = "{state}/cache"
size = "2GiB"

[policy]
state_dir = "{state}/state"

[control]
# Reachable by every local user (the state directory is root's, 0700); one per port.
socket = "/run/fedfs/demo-{port}.sock"

[[buckets]]
name = "demo"
owner = "user:root"
"""


def _wait_http(url: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return True
        except OSError as e:
            if getattr(e, "code", None):  # an HTTP error still means the server answers
                return True
            time.sleep(0.1)
    return False


def typed_command() -> str:
    """This fedfs command as a person can type it: `fedfs` if that name on PATH runs it."""
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) != "fedfs":  # python -m fedfs.cli
        return f"{shlex.quote(sys.executable)} -m fedfs.cli"
    on_path = shutil.which("fedfs")
    if on_path and os.path.realpath(on_path) == os.path.realpath(argv0):
        return "fedfs"
    return shlex.quote(os.path.abspath(argv0))


def stop_command(mountpoint: Path, state: Path) -> str:
    """The command that stops this demo, with the options it was started with."""
    words = [typed_command(), "demo", "--stop"]
    if mountpoint != DEFAULT_MOUNTPOINT:
        words += ["--mountpoint", shlex.quote(str(mountpoint))]
    if state != DEFAULT_STATE:
        words += ["--state", shlex.quote(str(state))]
    return " ".join(words)


def _fedfs(*args: str) -> int:
    """Run a `fedfs` command as its own process (ops does not import the CLI)."""
    return subprocess.run([sys.executable, "-m", "fedfs.cli", *args]).returncode


def start(mountpoint: Path, state: Path, port: int) -> int:
    import boto3

    state.mkdir(parents=True, exist_ok=True)
    os.chmod(state, 0o700)
    url = f"http://127.0.0.1:{port}"
    pidfile = state / "s3.pid"
    if not _wait_http(url, 0.2):
        log = open(state / "s3.log", "ab")  # noqa: SIM115 - handed to the server process
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        pidfile.write_text(str(proc.pid))
        if not _wait_http(url, 30):
            raise FedfsError(f"the demo S3 server did not start on {url}; see {state}/s3.log")
    s3 = boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=DEMO_KEY,
        aws_secret_access_key=DEMO_KEY,
    )
    s3.create_bucket(Bucket="demo")
    s3.put_object(
        Bucket="demo",
        Key="README.txt",
        Body=b"This object was written with the plain S3 API; fedfs shows it as a file.\n",
    )
    config = state / "demo.toml"
    config.write_text(CONFIG.format(port=port, key=DEMO_KEY, state=state))
    mountpoint.mkdir(parents=True, exist_ok=True)
    if os.path.ismount(mountpoint):
        print(f"fedfs demo: {mountpoint} is already mounted")
    else:
        code = _fedfs(
            "mount",
            "--config",
            str(config),
            "--log-file",
            str(state / "fedfs.log"),
            str(mountpoint),
        )
        if code:
            return code
    print(f"""
fedfs demo is running: bucket "demo" at {url} is mounted on {mountpoint}.
Try:
  ls -l {mountpoint}/demo
  echo hello > {mountpoint}/demo/hello.txt && cat {mountpoint}/demo/hello.txt
  mkdir {mountpoint}/demo/runs && cp /etc/services {mountpoint}/demo/runs/
Config: {config}   log: {state}/fedfs.log
Stop:   {stop_command(mountpoint, state)}""")
    return 0


def stop(mountpoint: Path, state: Path) -> int:
    if os.path.ismount(mountpoint):
        _fedfs("umount", str(mountpoint))
    pidfile = state / "s3.pid"
    if pidfile.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pidfile.read_text()), signal.SIGTERM)
        pidfile.unlink()
    print("fedfs demo stopped")
    return 0
