"""A real, throwaway OpenLDAP server on loopback for the identity tests.

`Slapd(tmpdir)` writes a slapd.conf (mdb backend; core, cosine and nis/RFC 2307
schemas) under tmpdir and runs Debian's /usr/sbin/slapd in the foreground on
ldap://127.0.0.1:PORT only, so it neither needs nor disturbs the system slapd.
The data lives in tmpdir, so stop() then start() brings back the same directory
on the same port, which is how tests play an LDAP outage and its end.

    python -m tests.backends.slapd    # a seeded server for manual use, until Ctrl-C
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SLAPD = "/usr/sbin/slapd"
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")
SEED_LDIF = Path(__file__).with_name("seed.ldif")

# The OpenLDAP clients would otherwise read /etc/ldap/ldap.conf and ~/.ldaprc,
# whose site settings (TLS, default URI) have no business in a test.
_CLIENT_ENV = {**os.environ, "LDAPNOINIT": "1"}


class SlapdError(RuntimeError):
    """slapd did not start, or an ldap-utils command against it failed."""


class Slapd:
    def __init__(self, tmpdir: Path | str, suffix: str = "dc=fedfs,dc=test") -> None:
        self.dir = Path(tmpdir)
        self.base_dn = suffix
        self.bind_dn = f"cn=admin,{suffix}"
        self.password = "fedfs-test-secret"
        self.port = _free_loopback_port()
        self.url = f"ldap://127.0.0.1:{self.port}"
        self.log_path = self.dir / "slapd.log"
        self._conf = self.dir / "slapd.conf"
        self._process: subprocess.Popen[bytes] | None = None
        self._write_config()

    @property
    def command(self) -> list[str]:
        # -d 0 keeps slapd in the foreground (no fork) without debug output, so
        # this object owns the process and can signal and wait for it.
        return [SLAPD, "-d", "0", "-h", self.url, "-f", str(self._conf)]

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 15.0) -> None:
        """Run slapd and return once it answers a bind as the root DN."""
        if self.running:
            return
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise SlapdError(
                    f"slapd exited with status {self._process.returncode}:\n{self._log_tail()}"
                )
            if self._answers():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise SlapdError(f"slapd did not answer within {timeout} s:\n{self._log_tail()}")
            time.sleep(0.02)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM slapd and wait for it to exit (SIGKILL if it will not)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGCONT)  # a paused slapd cannot act on SIGTERM
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def pause(self) -> None:
        """Freeze slapd (SIGSTOP): connections are accepted by the kernel but never answered."""
        assert self._process is not None, "slapd is not running"
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._process is not None, "slapd is not running"
        self._process.send_signal(signal.SIGCONT)

    def seed(self, ldif_text: str) -> None:
        """Add the entries in ldif_text."""
        self._ldap_tool("ldapadd", ldif_text)

    def modify(self, ldif_text: str) -> None:
        """Apply an LDIF change record (changetype: modify/add/delete)."""
        self._ldap_tool("ldapmodify", ldif_text)

    def __enter__(self) -> Slapd:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _write_config(self) -> None:
        data = self.dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        schemas = "\n".join(
            f"include {SCHEMA_DIR / name}.schema" for name in ("core", "cosine", "nis")
        )
        self._conf.write_text(
            f"""{schemas}
pidfile {self.dir / "slapd.pid"}
argsfile {self.dir / "slapd.args"}
modulepath {MODULE_DIR}
moduleload back_mdb
database mdb
maxsize 67108864
suffix "{self.base_dn}"
rootdn "{self.bind_dn}"
rootpw {self.password}
directory {data}
index objectClass,uid,uidNumber,gidNumber,memberUid,cn eq
access to * by * read
"""
        )

    def _answers(self) -> bool:
        result = subprocess.run(
            ["ldapwhoami", "-x", "-H", self.url, "-D", self.bind_dn, "-w", self.password],
            capture_output=True,
            env=_CLIENT_ENV,
            timeout=5,
        )
        return result.returncode == 0

    def _ldap_tool(self, tool: str, ldif_text: str) -> None:
        result = subprocess.run(
            [tool, "-x", "-H", self.url, "-D", self.bind_dn, "-w", self.password],
            input=ldif_text.encode(),
            capture_output=True,
            env=_CLIENT_ENV,
            timeout=30,
        )
        if result.returncode != 0:
            raise SlapdError(
                f"{tool} failed with status {result.returncode}: {result.stderr.decode().strip()}"
            )

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _die_with_parent() -> None:
    # A killed test run must not leave slapd behind holding its port.
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _free_loopback_port() -> int:
    # The port is free now; slapd binds it moments later with SO_REUSEADDR, and
    # keeps binding the same one on restart.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop slapd on kill, too
    with tempfile.TemporaryDirectory(prefix="fedfs-slapd-") as tmpdir, Slapd(tmpdir) as slapd:
        slapd.seed(SEED_LDIF.read_text())
        print(f"url      {slapd.url}")
        print(f"base_dn  {slapd.base_dn}")
        print(f"bind_dn  {slapd.bind_dn}")
        print(f"password {slapd.password}")
        print(f"command  {' '.join(slapd.command)}")
        print("Ctrl-C stops it.", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
