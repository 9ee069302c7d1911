"""POSIX ACLs as the kernel reads them from system.posix_acl_access/_default xattrs.

This module is the only place that writes or parses that byte layout: a little-endian
u32 version (2), then 8-byte entries {u16 tag, u16 perm, u32 id}, in canonical order.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from fedfs.errors import PolicyError

ACL_VERSION = 2
UNDEFINED_ID = 0xFFFFFFFF  # the id written for entries that name nobody
R, W, X = 4, 2, 1

_HEADER = struct.Struct("<I")
_ENTRY = struct.Struct("<HHI")


class AclTag(enum.IntEnum):
    """Entry tags; their numeric order is also the canonical entry order."""

    USER_OBJ = 0x01
    USER = 0x02
    GROUP_OBJ = 0x04
    GROUP = 0x08
    MASK = 0x10
    OTHER = 0x20


NAMED_TAGS = frozenset({AclTag.USER, AclTag.GROUP})
_REQUIRED = (AclTag.USER_OBJ, AclTag.GROUP_OBJ, AclTag.OTHER)


@dataclass(frozen=True, slots=True)
class AclEntry:
    """One ACL entry; id is a uid/gid for USER/GROUP and UNDEFINED_ID otherwise."""

    tag: AclTag
    perm: int
    id: int = UNDEFINED_ID

    def __post_init__(self) -> None:
        try:
            tag = AclTag(self.tag)
        except ValueError:
            raise PolicyError(f"unknown ACL entry tag {self.tag:#x}") from None
        object.__setattr__(self, "tag", tag)
        if not 0 <= self.perm <= 7:
            raise PolicyError(f"ACL permission {self.perm} is out of range: use 0-7 (rwx bits)")
        if tag in NAMED_TAGS:
            if not 0 <= self.id < UNDEFINED_ID:
                raise PolicyError(f"ACL {tag.name} id {self.id} is not a valid uid/gid")
        else:
            # The kernel ignores the id of these entries; one spelling keeps bytes canonical.
            object.__setattr__(self, "id", UNDEFINED_ID)


def pack_acl(
    user_obj: int,
    users: Mapping[int, int],
    group_obj: int,
    groups: Mapping[int, int],
    mask: int | None,
    other: int,
) -> bytes:
    """Encode an ACL given as perms per part (users/groups: id -> perm), in canonical order.

    The engine calls this directly on its hot path, so it takes plain ints and does not
    validate; Acl.encode is the checked way in.
    """
    flat: list[int] = [ACL_VERSION, AclTag.USER_OBJ, user_obj, UNDEFINED_ID]
    for uid in sorted(users):
        flat += (AclTag.USER, users[uid], uid)
    flat += (AclTag.GROUP_OBJ, group_obj, UNDEFINED_ID)
    for gid in sorted(groups):
        flat += (AclTag.GROUP, groups[gid], gid)
    if mask is not None:
        flat += (AclTag.MASK, mask, UNDEFINED_ID)
    flat += (AclTag.OTHER, other, UNDEFINED_ID)
    return struct.pack("<I" + "HHI" * ((len(flat) - 1) // 3), *flat)


@dataclass(frozen=True, slots=True)
class Acl:
    """A valid POSIX ACL in canonical order; building one merges duplicate entries (perm OR)."""

    entries: tuple[AclEntry, ...]

    def __init__(self, entries: Iterable[AclEntry]) -> None:
        merged: dict[tuple[AclTag, int], int] = {}
        for entry in entries:
            key = (entry.tag, entry.id)
            merged[key] = merged.get(key, 0) | entry.perm
        tags = {tag for tag, _ in merged}
        missing = [tag.name for tag in _REQUIRED if tag not in tags]
        if missing:
            raise PolicyError(
                f"ACL is missing its {', '.join(missing)} entry: every ACL needs "
                "USER_OBJ, GROUP_OBJ and OTHER"
            )
        if tags & NAMED_TAGS and AclTag.MASK not in tags:
            raise PolicyError("ACL has named user/group entries but no MASK entry")
        canonical = tuple(AclEntry(tag, perm, id_) for (tag, id_), perm in sorted(merged.items()))
        object.__setattr__(self, "entries", canonical)

    @classmethod
    def from_mode(cls, mode: int) -> Acl:
        """The minimal ACL that says exactly what the permission bits of mode say."""
        return cls(
            [
                AclEntry(AclTag.USER_OBJ, (mode >> 6) & 7),
                AclEntry(AclTag.GROUP_OBJ, (mode >> 3) & 7),
                AclEntry(AclTag.OTHER, mode & 7),
            ]
        )

    @property
    def is_minimal(self) -> bool:
        """True when the ACL holds nothing beyond the mode (no named entries, no mask)."""
        return len(self.entries) == 3

    @property
    def mode(self) -> int:
        """The rwxrwxrwx bits POSIX shows for this ACL: the group bits are MASK when present."""
        perms = {entry.tag: entry.perm for entry in self.entries if entry.tag not in NAMED_TAGS}
        group = perms.get(AclTag.MASK, perms[AclTag.GROUP_OBJ])
        return (perms[AclTag.USER_OBJ] << 6) | (group << 3) | perms[AclTag.OTHER]

    def perm(self, tag: AclTag, id_: int = UNDEFINED_ID) -> int | None:
        """The perm of the entry with this tag (and id, for USER/GROUP), or None if absent."""
        if tag not in NAMED_TAGS:
            id_ = UNDEFINED_ID
        for entry in self.entries:
            if entry.tag == tag and entry.id == id_:
                return entry.perm
        return None

    def encode(self) -> bytes:
        """The xattr value the kernel expects for system.posix_acl_access/_default."""
        parts: dict[AclTag, int] = {}
        users: dict[int, int] = {}
        groups: dict[int, int] = {}
        for entry in self.entries:
            if entry.tag == AclTag.USER:
                users[entry.id] = entry.perm
            elif entry.tag == AclTag.GROUP:
                groups[entry.id] = entry.perm
            else:
                parts[entry.tag] = entry.perm
        return pack_acl(
            parts[AclTag.USER_OBJ],
            users,
            parts[AclTag.GROUP_OBJ],
            groups,
            parts.get(AclTag.MASK),
            parts[AclTag.OTHER],
        )

    @classmethod
    def decode(cls, data: bytes) -> Acl:
        """Parse an xattr value strictly; any malformed input raises PolicyError.

        Entries may come in any order (the result is canonical), but a tag or a named id
        that appears twice is refused: merging would silently change what the writer said.
        An ACL with no entries is refused too; callers treat removexattr as "no ACL".
        """
        if len(data) < _HEADER.size or (len(data) - _HEADER.size) % _ENTRY.size:
            raise PolicyError(
                f"ACL xattr is {len(data)} bytes: expected 4 header bytes plus 8 bytes per entry"
            )
        (version,) = _HEADER.unpack_from(data)
        if version != ACL_VERSION:
            raise PolicyError(f"ACL xattr version is {version}: only version {ACL_VERSION} exists")
        seen: set[tuple[AclTag, int]] = set()
        entries: list[AclEntry] = []
        for tag, perm, id_ in _ENTRY.iter_unpack(data[_HEADER.size :]):
            entry = AclEntry(tag, perm, id_)  # validates tag, perm and id
            key = (entry.tag, entry.id)
            if key in seen:
                who = f" for id {entry.id}" if entry.tag in NAMED_TAGS else ""
                raise PolicyError(f"ACL has two {entry.tag.name} entries{who}")
            seen.add(key)
            entries.append(entry)
        return cls(entries)

    def __str__(self) -> str:
        """getfacl-like text, for messages and debugging."""
        lines = []
        for entry in self.entries:
            kind = entry.tag.name.lower().removesuffix("_obj")
            who = str(entry.id) if entry.tag in NAMED_TAGS else ""
            lines.append(f"{kind}:{who}:{_rwx(entry.perm)}")
        return "\n".join(lines)


def _rwx(perm: int) -> str:
    return "".join(ch if perm & bit else "-" for ch, bit in (("r", R), ("w", W), ("x", X)))


def permits(
    mode: int,
    acl: bytes | None,
    owner_uid: int,
    owner_gid: int,
    uid: int,
    gids: frozenset[int],
    want: int,
) -> bool:
    """Whether the kernel's POSIX ACL check lets uid (in gids) have `want` (rwx bits).

    The access check algorithm of acl(5): owner, then named users, then the
    owning and named groups (any one granting suffices), then other; named
    entries and the owning group are limited by the mask. `mode` is what
    getattr shows (its group bits are the mask when an ACL is present). As
    Linux does (fs/namei.c acl_permission_check), an ACL whose mask is empty is
    not consulted at all: the mode bits decide.
    """
    if uid == 0:
        return True
    if acl is None or not mode & 0o070:
        if uid == owner_uid:
            return (mode >> 6) & want == want
        if owner_gid in gids:
            return (mode >> 3) & want == want
        return mode & want == want
    entries = Acl.decode(acl).entries
    mask = next((e.perm for e in entries if e.tag == AclTag.MASK), 7)
    if uid == owner_uid:
        return (mode >> 6) & want == want
    for e in entries:
        if e.tag == AclTag.USER and e.id == uid:
            return e.perm & mask & want == want
    matched = False
    for e in entries:
        if (e.tag == AclTag.GROUP_OBJ and owner_gid in gids) or (
            e.tag == AclTag.GROUP and e.id in gids
        ):
            matched = True
            if e.perm & mask & want == want:
                return True
    if matched:
        return False
    return mode & want == want
