"""`fedfs doctor`: every check it claims finds its problem, with the fix, against real things.

Each test breaks one thing (the config, the endpoint, the credentials on an S3
server that checks them, a bucket, an owner, the cache directory, its disk,
FUSE, a key, the clock seen through a proxy that shifts the Date header, the
site policy, the policy database, the audit chain, the metrics outputs, the
LDAP server) and runs the real `fedfs doctor` command on it.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest

from fedfs.audit.chain import AuditTrail, SigningKey
from fedfs.ops import doctor
from tests.support import FEDFS, REPO, MotoServer, Mount, UnixUser, free_port, write_config

Findings = dict[str, dict[str, Any]]


def run_doctor(cfg: Path, *extra: str, env: dict[str, str] | None = None) -> tuple[int, Findings]:
    r = subprocess.run(
        [*FEDFS, "doctor", "--config", str(cfg), "--json", *extra],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        env=env,
    )
    assert r.returncode in (0, 1), r.stderr
    found = json.loads(r.stdout)["findings"]
    return r.returncode, {f["check"]: f for f in found}


def assert_finding(found: Findings, check: str, status: str, *words: str) -> dict[str, Any]:
    f = found[check]
    assert f["status"] == status, f
    text = f["found"] + " | fix: " + f["fix"]
    for w in words:
        assert w in text, f"{w!r} not in {check}: {text}"
    if status in ("WARN", "FAIL"):
        assert f["fix"], f"{check} gives no fix"
    return f


MakeConfig = Callable[..., Path]


@pytest.fixture
def make_config(moto: MotoServer, bucket: str, tmp_path: Path) -> MakeConfig:
    def make(
        buckets: list[tuple[str, str]] | None = None,
        endpoint: str | None = None,
        extra: str = "",
        top: str = "",
    ) -> Path:
        return write_config(
            tmp_path / "doctor.toml",
            endpoint or moto.url,
            buckets or [(bucket, "user:root")],
            tmp_path / "cache",
            extra,
            top=top,
        )

    return make


def test_a_healthy_setup_passes_every_check(make_config: MakeConfig) -> None:
    code, found = run_doctor(make_config())
    assert code == 0
    bad = {k: f for k, f in found.items() if f["status"] not in ("OK", "SKIP")}
    assert not bad, bad
    for check in ("config", "endpoint", "credentials", "clock", "identity", "cache dir"):
        assert found[check]["status"] == "OK"
    assert found["daemon"]["status"] == "SKIP"  # nothing mounted: the config alone was checked
    text = subprocess.run(
        [*FEDFS, "doctor", "--config", str(make_config())], capture_output=True, text=True, cwd=REPO
    ).stdout
    assert "checks OK" in text and "OK    endpoint" in text


def test_a_running_mount_is_asked_too(make_mount: Any, bucket: str) -> None:
    m: Mount = make_mount([(bucket, "user:root")])
    code, found = run_doctor(m.config)
    assert code == 0, found
    assert_finding(found, "daemon", "OK", f"mounted on {m.mountpoint}")
    assert_finding(found, "cache dir", "OK", "mode 0700")
    assert_finding(found, "policy database", "OK", "version")
    assert_finding(found, "audit", "OK", "intact")


def test_a_config_mistake_is_the_only_finding(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[cache]\ndir = "/var/cache/x"\nsize = "lots"\n[[buckets]]\nname = "b1"\n')
    code, found = run_doctor(cfg)
    assert code == 1 and list(found) == ["config"]
    assert_finding(found, "config", "FAIL", "[cache] size", "'lots' is not a size", str(cfg))


def test_an_unreachable_endpoint_fails_in_bounded_time(make_config: MakeConfig) -> None:
    started = time.monotonic()
    code, found = run_doctor(make_config(endpoint=f"http://127.0.0.1:{free_port()}"))
    assert time.monotonic() - started < 30
    assert code == 1
    assert_finding(found, "endpoint", "FAIL", "did not answer", "[store] endpoint")
    assert found["credentials"]["status"] == "SKIP"


@pytest.fixture(scope="module")
def strict_moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MotoServer, str, str]]:
    """A moto server that checks credentials, with one IAM key pair (allowed nothing) and one
    bucket made before it starts to."""
    server = MotoServer(
        log=tmp_path_factory.mktemp("strict") / "moto.log",
        env={"INITIAL_NO_AUTH_ACTION_COUNT": "3"},  # create_user, create_access_key, create_bucket
    ).start()
    iam = boto3.client(
        "iam",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    iam.create_user(UserName="doctor")
    key = iam.create_access_key(UserName="doctor")["AccessKey"]
    server.client().create_bucket(Bucket="b-doctor")
    yield server, key["AccessKeyId"], key["SecretAccessKey"]
    server.stop()


def test_unknown_access_key_and_wrong_secret_are_told_apart(
    strict_moto: tuple[MotoServer, str, str], tmp_path: Path
) -> None:
    server, key_id, secret = strict_moto
    cases = [
        ("testing", "testing", "FAIL", "does not know access key testing"),
        (key_id, "not-the-secret", "FAIL", "secret key does not match"),
        (key_id, secret, "OK", "accepted"),  # valid, though this user may not list buckets
    ]
    for access, secret_key, status, words in cases:
        cfg = write_config(tmp_path / "c.toml", server.url, [("b-doctor", "user:root")], tmp_path)
        text = cfg.read_text().replace('access_key = "testing"', f'access_key = "{access}"')
        cfg.write_text(text.replace('secret_key = "testing"', f'secret_key = "{secret_key}"'))
        code, found = run_doctor(cfg)
        assert code == 1
        assert_finding(found, "credentials", status, words)
        if status == "FAIL":
            assert found["bucket b-doctor"]["status"] == "SKIP"
        else:  # a key the store knows, which no policy allows to list the bucket
            assert_finding(found, "bucket b-doctor", "FAIL", "may not list", "s3:ListBucket")


def test_no_credentials_at_all(make_config: MakeConfig, tmp_path: Path) -> None:
    cfg = make_config()
    cfg.write_text(
        cfg.read_text()
        .replace('access_key = "testing"\n', "")
        .replace('secret_key = "testing"\n', "")
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= {
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
    }
    code, found = run_doctor(cfg, env=env)
    assert code == 1
    assert_finding(found, "endpoint", "OK", "accepts connections")
    assert_finding(found, "credentials", "FAIL", "no S3 credentials", "AWS_ACCESS_KEY_ID")


def test_a_missing_bucket_and_a_missing_owner(make_config: MakeConfig, bucket: str) -> None:
    cfg = make_config([(bucket, "user:root"), ("no-such-bucket-x", "user:fedfs-nobody-xyz")])
    code, found = run_doctor(cfg)
    assert code == 1
    assert found[f"bucket {bucket}"]["status"] == "OK"
    assert_finding(found, "bucket no-such-bucket-x", "FAIL", "does not exist", "aws s3 mb")
    assert_finding(found, "owner no-such-bucket-x", "FAIL", "no user 'fedfs-nobody-xyz'", "getent")
    assert found[f"owner {bucket}"]["status"] == "OK"


def test_an_ldap_server_that_is_down(make_config: MakeConfig, bucket: str) -> None:
    url = f"ldap://127.0.0.1:{free_port()}"
    cfg = make_config(
        [(bucket, "user:alice")],
        top=f'[identity]\nsource = "ldap"\nurl = "{url}"\nbase_dn = "dc=x"\ntimeout = 2',
    )
    code, found = run_doctor(cfg)
    assert code == 1
    assert_finding(found, "identity", "FAIL", url, "ldapsearch")
    assert found[f"owner {bucket}"]["status"] == "SKIP"


@pytest.mark.parametrize(
    ("breakage", "status", "words"),
    [
        ("mode 0755", "WARN", ("mode 0755", "chmod 700")),
        ("mode 0777", "FAIL", ("mode 0777", "plant")),
        ("owned by alice", "FAIL", ("owned by fedfs-alice", "chown root:root")),
        ("a symlink", "FAIL", ("symbolic link", "real directory")),
        ("a file", "FAIL", ("not a directory",)),
    ],
)
def test_a_cache_dir_fedfs_cannot_trust(
    make_config: MakeConfig,
    tmp_path: Path,
    alice: UnixUser,
    breakage: str,
    status: str,
    words: tuple[str, ...],
) -> None:
    d = tmp_path / "cache"
    if breakage == "a symlink":
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        d.symlink_to(tmp_path / "elsewhere")
    elif breakage == "a file":
        d.write_text("")
    else:
        d.mkdir()
        os.chmod(d, 0o755 if breakage != "mode 0777" else 0o777)
        if breakage == "owned by alice":
            os.chmod(d, 0o700)
            os.chown(d, alice.uid, alice.gid)
    code, found = run_doctor(make_config())
    assert code == (0 if status == "WARN" else 1)
    assert_finding(found, "cache dir", status, str(d), *words)


def test_a_cache_disk_smaller_than_the_cache(make_config: MakeConfig, tmp_path: Path) -> None:
    disk = tmp_path / "tiny"
    disk.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(disk)], check=True
    )
    try:
        cfg = make_config(extra=f'dir = "{disk}"\nsize = "4MiB"\nblock_size = "1MiB"')
        code, found = run_doctor(cfg)
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
    assert code == 1
    assert found["cache dir"]["status"] == "OK"
    assert_finding(found, "cache space", "FAIL", "ENOSPC", "lower [cache] size", "4.0 MiB")


def test_fuse_problems(tmp_path: Path) -> None:
    """/dev/fuse cannot be removed under a running test suite: the check takes its paths."""
    missing = doctor.check_fuse(True, dev=tmp_path / "fuse", conf=tmp_path / "fuse.conf", euid=0)
    assert missing[0].status == "FAIL" and "missing" in missing[0].found
    assert "modprobe fuse" in missing[0].fix
    (tmp_path / "fuse").write_text("")
    plain = doctor.check_fuse(True, dev=tmp_path / "fuse", euid=0)
    assert plain[0].status == "FAIL" and "not a character device" in plain[0].found
    real = doctor.check_fuse(True, euid=0, which=lambda tool: None)
    assert real[0].status == "OK"  # the real /dev/fuse opens
    assert real[1].status == "WARN" and "apt-get install fuse3" in real[1].fix
    (tmp_path / "fuse.conf").write_text("# user_allow_other\nmount_max = 1000\n")
    user = doctor.check_fuse(True, conf=tmp_path / "fuse.conf", euid=1000)
    assert user[2].status == "FAIL" and "user_allow_other" in user[2].fix
    (tmp_path / "fuse.conf").write_text("user_allow_other\n")
    assert doctor.check_fuse(True, conf=tmp_path / "fuse.conf", euid=1000)[2].status == "OK"


def test_keys_fedfs_cannot_show_are_listed(make_config: MakeConfig, s3: Any, bucket: str) -> None:
    for key in ("ok.txt", "a//b", "up/../x", "n" * 256, "dir/fine"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"1")
    code, found = run_doctor(make_config())
    assert code == 0  # hidden keys are a warning: the mount works
    f = assert_finding(found, f"keys {bucket}", "WARN", "3 key(s)", "aws s3 mv")
    assert sorted(f["details"]) == sorted(
        [
            "'a//b': empty component",
            "'up/../x': '..' component",
            f"'{'n' * 256}': component of 256 bytes (more than 255)",
        ]
    )
    code, found = run_doctor(make_config(), "--max-keys", "2")
    assert "stopped after 2 keys" in found[f"keys {bucket}"]["found"]


class SkewedDateProxy:
    """An HTTP proxy in front of a server that moves every answer's Date header by `offset`."""

    def __init__(self, target_port: int, offset: float) -> None:
        self.target_port = target_port
        self.offset = offset
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> str:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.target_port, timeout=30)
                upstream.request(self.command, self.path, body, dict(self.headers))
                answer = upstream.getresponse()
                data = answer.read()
                self.send_response_only(answer.status, answer.reason)
                for k, v in answer.getheaders():
                    if k.lower() not in ("date", "content-length", "connection", "server"):
                        self.send_header(k, v)
                self.send_header("Date", formatdate(time.time() + proxy.offset, usegmt=True))
                length = answer.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                upstream.close()

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = forward

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.mark.parametrize(("offset", "status"), [(-90, "WARN"), (600, "FAIL")])
def test_clock_skew_seen_in_the_stores_date_header(
    make_config: MakeConfig, moto: MotoServer, offset: float, status: str
) -> None:
    proxy = SkewedDateProxy(moto.port, offset)
    try:
        code, found = run_doctor(make_config(endpoint=proxy.start()))
    finally:
        proxy.stop()
    direction = "behind" if offset > 0 else "ahead of"
    f = assert_finding(found, "clock", status, f" s {direction} the store's", "chrony")
    measured = int(f["found"].split(" s ")[0].split()[-1])
    assert abs(measured - abs(offset)) <= 2, f
    assert code == (1 if status == "FAIL" else 0)


def test_broken_site_policy_policy_database_and_audit_chain(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    cfg = make_config()
    state = tmp_path / "cache-state"
    site = tmp_path / "cache-state-site"
    site.mkdir()
    (site / "10-site.toml").write_text("grant_lifetime = [\n")
    state.mkdir(mode=0o755)
    (state / "policy.db").write_bytes(b"not a database")
    trail = AuditTrail(state / "audit", socket.gethostname(), SigningKey.generate())
    trail.append(actor_uid=0, actor="root", action="share", principal="user:alice", path="/b")
    log = trail.log_path
    log.write_bytes(log.read_bytes().replace(b"user:alice", b"user:malory"))
    code, found = run_doctor(cfg)
    assert code == 1
    assert_finding(found, "site policy", "FAIL", "10-site.toml", "policy/README.md")
    assert_finding(found, "policy state", "WARN", "mode 0755", "chmod 700")
    assert_finding(found, "policy database", "FAIL", "damaged")
    assert_finding(found, "audit", "FAIL", "altered", "move it aside")


def test_metrics_outputs_that_cannot_work(make_config: MakeConfig, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = make_config(
            top=f'[metrics]\nlisten = "127.0.0.1:{port}"\n'
            f'textfile = "{tmp_path}/no-such-dir/fedfs.prom"'
        )
        code, found = run_doctor(cfg)
    assert code == 1
    assert_finding(found, "metrics listen", "FAIL", f"127.0.0.1:{port}", "free port")
    assert_finding(found, "metrics textfile", "FAIL", "no-such-dir", "mkdir -p")
