"""Processes of two non-root uids see the owners and modes they should; the kernel refuses the rest."""

from __future__ import annotations

import os
import stat
from typing import Any

from tests.support import Mount, UnixUser


def test_modes_and_owners_are_enforced_per_process(
    make_mount: Any, bucket: str, alice: UnixUser, bob: UnixUser
) -> None:
    m: Mount = make_mount([(bucket, f"user:{alice.name}")])
    root = m.path(bucket)

    # alice owns the bucket root, so she may create; bob may not.
    assert alice.run("sh", "-c", f"umask 077; echo secret > {root}/private.txt").returncode == 0
    assert alice.run("sh", "-c", f"umask 022; echo shared > {root}/public.txt").returncode == 0
    r = bob.run("sh", "-c", f"echo intruder > {root}/bob.txt")
    assert r.returncode != 0 and b"Permission denied" in r.stderr

    st = os.stat(root / "private.txt")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (alice.uid, alice.gid, 0o600)

    # bob: the private file is refused, the public one readable but not writable
    r = bob.run("cat", root / "private.txt")
    assert r.returncode != 0 and b"Permission denied" in r.stderr and r.stdout == b""
    assert bob.run("cat", root / "public.txt").stdout == b"shared\n"
    r = bob.run("sh", "-c", f"echo x >> {root}/public.txt")
    assert r.returncode != 0 and b"Permission denied" in r.stderr
    # only the owner may chmod or chown
    r = bob.run("chmod", "666", root / "public.txt")
    assert r.returncode != 0 and b"Operation not permitted" in r.stderr
    r = alice.run("chown", bob.name, root / "public.txt")
    assert r.returncode != 0 and b"Operation not permitted" in r.stderr

    # alice opens up the private file; bob can now read it, after the kernel re-checks
    assert alice.run("chmod", "644", root / "private.txt").returncode == 0
    assert bob.run("cat", root / "private.txt").stdout == b"secret\n"

    # a private directory hides its names from bob
    assert alice.run("mkdir", "-m", "700", root / "hidden").returncode == 0
    assert alice.run("sh", "-c", f"echo x > {root}/hidden/inside").returncode == 0
    r = bob.run("ls", root / "hidden")
    assert r.returncode != 0 and b"Permission denied" in r.stderr and b"inside" not in r.stdout
    r = bob.run("cat", root / "hidden" / "inside")
    assert r.returncode != 0 and r.stdout == b""
    # ls -l shows bob the real owner and mode
    r = bob.run("stat", "-c", "%U %a", root / "hidden")
    assert r.stdout.decode().split() == [alice.name, "700"]
    # bob cannot delete alice's files in her directory
    r = bob.run("rm", "-f", root / "public.txt")
    assert r.returncode != 0 and (root / "public.txt").exists()
