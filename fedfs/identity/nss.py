"""Identities from the node's name service switch: pwd, grp and getgrouplist.

On HPC nodes NSS is usually sssd in front of LDAP, so this default source
already sees the site's directory. The C library's calls are thread-safe;
`NssIdentity` is used from the daemon's worker threads like every source.
"""

from __future__ import annotations

import grp
import os
import pwd
import time
from typing import TypeVar

from fedfs.identity.source import Group, IdentityHealth, User

__all__ = ["NssIdentity"]

_T = TypeVar("_T")

# Names that the C library rejects (NUL bytes) or ids outside uid_t raise
# ValueError/OverflowError instead of KeyError; for a caller they are all "unknown".
_NOT_FOUND = (KeyError, ValueError, OverflowError)


class NssIdentity:
    """Identities from the node's name service switch (pwd, grp, getgrouplist)."""

    def __init__(self) -> None:
        self._last_success: float | None = None

    def user(self, name: str) -> User | None:
        try:
            entry = pwd.getpwnam(name)
        except _NOT_FOUND:
            return self._answered(None)
        return self._answered(self._user_from(entry))

    def user_by_uid(self, uid: int) -> User | None:
        try:
            entry = pwd.getpwuid(uid)
        except _NOT_FOUND:
            return self._answered(None)
        return self._answered(self._user_from(entry))

    def group(self, name: str) -> Group | None:
        try:
            entry = grp.getgrnam(name)
        except _NOT_FOUND:
            return self._answered(None)
        return self._answered(_group_from_grp(entry))

    def group_by_gid(self, gid: int) -> Group | None:
        try:
            entry = grp.getgrgid(gid)
        except _NOT_FOUND:
            return self._answered(None)
        return self._answered(_group_from_grp(entry))

    def health(self) -> IdentityHealth:
        # NSS gives no error channel: an sssd outage looks like "unknown name".
        return IdentityHealth("nss", ok=True, last_error=None, last_success=self._last_success)

    def _user_from(self, entry: pwd.struct_passwd) -> User:
        gids = frozenset(os.getgrouplist(entry.pw_name, entry.pw_gid)) | {entry.pw_gid}
        return User(entry.pw_name, entry.pw_uid, entry.pw_gid, gids)

    def _answered(self, answer: _T) -> _T:
        self._last_success = time.time()
        return answer


def _group_from_grp(entry: grp.struct_group) -> Group:
    return Group(entry.gr_name, entry.gr_gid, frozenset(entry.gr_mem))
