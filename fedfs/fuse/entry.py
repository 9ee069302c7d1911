"""Directory entries the kernel already knows, handed out without their attributes.

pyfuse3 always answers READDIRPLUS (it turns the kernel's adaptive mode off), and
for every entry that carries a node id the kernel refreshes the inode's attributes
and drops its cached POSIX ACLs (`fuse_direntplus_link` in fs/fuse/readdir.c). So a
second `ls -l` of a directory whose entries are all cached still costs one GETXATTR
round trip per entry, as `ls` asks for each file's ACL. An entry with node id 0
means "no attributes for this one" to the kernel: it lists the name and keeps what
it has cached (documented in the same function). That is always correct; the
kernel that lacks the entry just looks it up.

pyfuse3 sets the node id and `st_ino` together and offers no way to send one
without the other, so `without_attributes` clears the node id in the C struct the
reply is built from. Its place is found at import by probing a fresh
EntryAttributes for known values, and checked against the layout of libfuse's
`fuse_entry_param` (ino, generation, then struct stat with st_ino second); if the
probe does not find exactly that, SUPPORTED is False and every entry carries its
attributes as before.
"""

from __future__ import annotations

import ctypes
import logging

import pyfuse3

log = logging.getLogger(__name__)

_INO = 0x1F2E3D4C5B6A7988
_GEN = 0x0102030405060708


def _probe() -> int | None:
    """Offset of fuse_entry_param.ino inside an EntryAttributes object, or None."""
    a = pyfuse3.EntryAttributes()
    a.st_ino = pyfuse3.InodeT(_INO)
    a.generation = _GEN
    size = type(a).__basicsize__
    raw = ctypes.string_at(id(a), size)
    ino, gen = _INO.to_bytes(8, "little"), _GEN.to_bytes(8, "little")
    at = raw.find(ino)
    if at < 0 or raw.count(ino) != 2 or raw.count(gen) != 1:
        return None
    # struct fuse_entry_param { fuse_ino_t ino; uint64_t generation; struct stat attr; ... }
    # and struct stat begins { dev_t st_dev; ino_t st_ino; ... } on 64-bit Linux.
    if raw[at + 8 : at + 16] != gen or raw[at + 24 : at + 32] != ino:
        return None
    # Clearing it must leave st_ino (what the directory entry shows) as it was.
    ctypes.memset(id(a) + at, 0, 8)
    after = ctypes.string_at(id(a), size)
    if after[at : at + 8] != bytes(8) or after[at + 24 : at + 32] != ino:
        return None
    return at


_OFFSET = _probe()
SUPPORTED = _OFFSET is not None
if not SUPPORTED:
    log.info("pyfuse3's entry layout is not the one expected: directory entries keep attributes")


def without_attributes(a: pyfuse3.EntryAttributes) -> pyfuse3.EntryAttributes:
    """a with node id 0: readdir lists the name, the kernel keeps its cached inode and ACLs."""
    assert _OFFSET is not None, "check SUPPORTED first"
    ctypes.memset(id(a) + _OFFSET, 0, 8)
    return a
