"""ACLs that say no more than the mode or the grants are accepted and change nothing.

`cp -p` and `setfacl -b` send an ACL without named entries; `getfacl |
setfacl --set-file` restates the grants. The owner of a file inside a shared
tree may do all of these, though grants on parent paths give the entries; a
change fedfs refuses gives EPERM and the log says why.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from tests.support import FEDFS, Mount, UnixUser, wait_for


def ok(r: Any) -> str:
    assert r.returncode == 0, f"{r.args}: {r.stderr.decode()}"
    return str(r.stdout.decode())


def test_owner_restates_or_clears_acl_in_a_shared_tree(
    make_mount: Any, bucket: str, alice: UnixUser, bob: UnixUser, carol: UnixUser
) -> None:
    m: Mount = make_mount([(bucket, f"user:{alice.name}")])
    root = m.path(bucket)
    ok(alice.run("mkdir", "-m", "775", root / "jobs"))
    ok(alice.run(*FEDFS, "share", root / "jobs", "--with", f"user:{carol.name}", "--write"))
    ok(alice.run(*FEDFS, "share", root / "jobs", "--with", f"user:{bob.name}", "--write"))
    f = root / "jobs" / "bob.txt"
    ok(bob.run("sh", "-c", f"umask 022; echo from-bob > {f}"))
    before = ok(bob.run("getfacl", "-cn", f))
    assert f"user:{carol.uid}:rw-" in before, before

    # The same ACL again, and the minimal ACL that the shown mode says: nothing changes.
    ok(bob.run("setfacl", "--set-file=-", f, input=before.encode()))
    assert ok(bob.run("getfacl", "-cn", f)) == before
    mode = stat.S_IMODE(os.stat(f).st_mode)
    assert mode == 0o664  # umask 022; the group bits show what the grants give
    ok(bob.run("setfacl", "--set", "u::rw-,g::rw-,o::r--", f))
    assert ok(bob.run("getfacl", "-cn", f)) == before
    ok(alice.run("setfacl", "-k", root / "jobs"))  # default ACL removed: grants still reach
    assert f"default:user:{carol.uid}:rwx" in ok(alice.run("getfacl", "-cn", root / "jobs"))

    # setfacl -b by the owner, who may not share: accepted; the grant on jobs stays
    # listed, limited by the group bits as a chmod from the shell would (it does not come
    # from the process that created the file, as cp -p's would).
    ok(bob.run("setfacl", "-b", f))
    after = ok(bob.run("getfacl", "-cn", f))
    assert f"user:{carol.uid}:rw-" in after and "mask::r--" in after, after
    assert carol.run("cat", f).stdout == b"from-bob\n"
    assert carol.run("sh", "-c", f"echo x >> {f}").returncode != 0
    assert "an ACL without named entries was set" in m.log_text()

    # A real change by someone who may not share: EPERM, and the log says why.
    r = bob.run("setfacl", "-m", f"u:{alice.name}:rw", f)
    assert r.returncode != 0 and b"Operation not permitted" in r.stderr
    wait_for(
        lambda: f"setfacl on {root}/jobs/bob.txt by {bob.name} refused: " in m.log_text(),
        "the refusal in the log",
    )
    assert f"{bob.name} holds write on /{bucket}/jobs" in m.log_text()


def test_cp_p_into_a_shared_directory_keeps_the_grants(
    make_mount: Any, bucket: str, alice: UnixUser, bob: UnixUser, public_dir: Path
) -> None:
    m: Mount = make_mount([(bucket, f"user:{alice.name}")])
    root = m.path(bucket)
    ok(alice.run("mkdir", "-m", "775", root / "jobs"))
    ok(alice.run(*FEDFS, "share", root / "jobs", "--with", f"user:{bob.name}", "--write"))
    src = public_dir / f"{m.mountpoint.parent.name}-f8a.txt"
    src.write_text("job\n")
    os.chown(src, alice.uid, alice.gid)
    src.chmod(0o640)
    r = alice.run("cp", "-p", src, root / "jobs" / "f8a.txt")
    assert (r.returncode, r.stderr) == (0, b"")
    # cp -p restates the file's own mode 0640: no limit, so the group bits show bob's
    # write grant (the ACL mask) and bob may still write the copy.
    assert stat.S_IMODE(os.stat(root / "jobs" / "f8a.txt").st_mode) == 0o660
    assert bob.run("cat", root / "jobs" / "f8a.txt").stdout == b"job\n"
    assert bob.run("sh", "-c", f"echo more >> {root / 'jobs' / 'f8a.txt'}").returncode == 0
    # The owner's own chmod from a shell is her word, even to the file's own mode.
    ok(alice.run("chmod", "640", root / "jobs" / "f8a.txt"))
    assert stat.S_IMODE(os.stat(root / "jobs" / "f8a.txt").st_mode) == 0o640
    assert bob.run("sh", "-c", f"echo more >> {root / 'jobs' / 'f8a.txt'}").returncode != 0
    assert bob.run("cat", root / "jobs" / "f8a.txt").returncode == 0
    ok(alice.run("chmod", "600", root / "jobs" / "f8a.txt"))
    assert bob.run("cat", root / "jobs" / "f8a.txt").returncode != 0


def test_chmod_600_from_a_shell_makes_a_file_created_0600_private(
    make_mount: Any, bucket: str, alice: UnixUser, mallory: UnixUser
) -> None:
    # mktemp, ssh-keygen and `install -m 600` create files 0600; in a directory shared
    # --write, `ls -l` shows the grant (-rw-rw----+). The owner's chmod 600 closes it.
    m: Mount = make_mount([(bucket, f"user:{alice.name}")])
    proj = m.path(bucket, "proj")
    ok(alice.run("mkdir", "-m", "755", proj))
    ok(alice.run(*FEDFS, "share", proj, "--with", f"user:{mallory.name}", "--write"))
    ok(alice.run("sh", "-c", f"cd {proj} && t=$(mktemp -p .) && echo KEY > $t && mv $t key"))
    assert stat.S_IMODE(os.stat(proj / "key").st_mode) == 0o660
    assert mallory.run("cat", proj / "key").stdout == b"KEY\n"
    ok(alice.run("chmod", "600", proj / "key"))
    assert stat.S_IMODE(os.stat(proj / "key").st_mode) == 0o600
    assert mallory.run("cat", proj / "key").returncode != 0
    assert mallory.run("sh", "-c", f"echo x >> {proj / 'key'}").returncode != 0
