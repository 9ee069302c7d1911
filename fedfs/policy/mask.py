"""The owner's limit on grants: how chmod and setfacl set an object's explicit ACL mask.

An object stores its mode and, once the owner limits grants, an explicit mask
(docs/SEMANTICS.md "Sharing"). This module owns the rule that turns a chmod or an
ACL written with setfacl into that stored pair. Pure functions of values, safe in
any thread; the caller (policy/sharing.py) passes the view `ls -l` showed before.
"""

from __future__ import annotations

from dataclasses import dataclass

_GROUP = 0o070


@dataclass(frozen=True, slots=True)
class Stored:
    """What chmod or setfacl leaves stored: the mode and the explicit mask (None: no limit)."""

    mode: int
    explicit_mask: int | None


def chmod(
    mode: int,
    explicit_mask: int | None,
    shown_mode: int,
    acl_in_force: bool,
    new_mode: int,
    *,
    by_creator: bool,
) -> Stored:
    """chmod(new_mode) of an object storing (mode, explicit_mask) that showed shown_mode.

    A chmod to the mode the object shows (`ls -l`, the grants in the group bits) changes
    nothing, nor, while it has no limit, one to its own mode by the process that created
    the object (by_creator): cp -p, tar x, rsync -a and editors restate the modes of what
    they write, and must not cut a write grant down to read; the same chmod from anyone
    else (`chmod 600 f` in a shell) is the owner's word. Otherwise
    its group bits become the limit on every grant, present or future, when it takes
    away group permissions the object's own mode gave (`chmod 600` of a 0644 file,
    `chmod g-w`), or when it takes away group permissions `ls -l` showed without giving
    the owning group any it lacked (`chmod 640` of a 0644 file shown 0664, `chmod 700`
    of a shared 0600 file). rsync and tar create files private and then chmod them to
    wider group bits: that cuts nothing. Once a limit exists every chmod moves it (to
    rwx: none). A mode that came from creation sets none.

    As POSIX defines chmod of an object with an ACL, the owning group's own entry
    (GROUP_OBJ) stays as it was while named entries are in force; otherwise the group
    bits are the owning group's.
    """
    new_mode &= 0o7777
    restates = by_creator and explicit_mask is None and new_mode == mode & 0o7777
    if new_mode == shown_mode & 0o7777 or restates:
        return Stored(mode, explicit_mask)
    new_group = (new_mode >> 3) & 7
    own_group = (mode >> 3) & 7
    shown_group = (shown_mode >> 3) & 7
    limit = explicit_mask
    narrows_shown = not new_group & ~own_group and shown_group & ~new_group
    if limit is not None or own_group & ~new_group or narrows_shown:
        limit = None if new_group == 7 else new_group
    if acl_in_force:
        new_mode = (new_mode & ~_GROUP) | (mode & _GROUP)
    return Stored(new_mode, limit)


def from_acl(
    explicit_mask: int | None,
    shown_mask: int | None,
    new_mask: int | None,
    named: list[int],
    group_obj: int,
    named_changed: bool = True,
) -> int | None:
    """The explicit mask after setfacl wrote an ACL with MASK new_mask (None: no MASK entry).

    The mask `getfacl` showed, written back unchanged (a round trip, cp -p of an
    equal ACL), keeps the stored limit. When the ACL changes named entries
    (named_changed), a mask that is just the union of the named entries and GROUP_OBJ
    is what setfacl computes when it is not told one, and POSIX computes it again at
    the next setfacl, so it is no lasting limit: none is stored. A mask changed while
    the named entries stay as shown (`setfacl -m m::r--`) is the owner's limit, even
    if it happens to equal that union (after `chmod 600` the entries show as `---`).
    """
    if new_mask is not None and new_mask == shown_mask:
        return explicit_mask
    if new_mask is None:
        return None
    union = group_obj
    for perm in named:
        union |= perm
    if new_mask == 7 or (named_changed and new_mask == union):
        return None
    return new_mask
