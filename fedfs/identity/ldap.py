"""Identities straight from an LDAP directory (RFC 2307 by default), through ldap3.

`LdapIdentity` keeps a TTL cache that goes on serving the last known answers
while the server is away, and never widens access by guessing. The only
module of fedfs that imports ldap3. Thread-safe: the daemon calls it from
worker threads; one connection, serialized by a lock, every wait bounded.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import ldap3
from ldap3.core.exceptions import LDAPException, LDAPOperationResult
from ldap3.utils.conv import escape_filter_chars

from fedfs.errors import IdentityError
from fedfs.events import event
from fedfs.identity.source import Group, IdentityHealth, User

log = logging.getLogger(__name__)

__all__ = ["RFC2307", "LdapIdentity", "LdapSchema"]


@dataclass(frozen=True)
class LdapSchema:
    """Object classes and attribute names of users and groups in the directory."""

    user_filter: str = "(objectClass=posixAccount)"
    user_name: str = "uid"
    user_uid: str = "uidNumber"
    user_gid: str = "gidNumber"
    group_filter: str = "(objectClass=posixGroup)"
    group_name: str = "cn"
    group_gid: str = "gidNumber"
    group_member: str = "memberUid"


RFC2307 = LdapSchema()
# An attribute description as RFC 4512 writes one (a name, or an OID): nothing else may go
# into a search filter unescaped.
ATTRIBUTE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]*|[0-9]+(\.[0-9]+)+")


class _Unreachable(Exception):
    """The directory could not answer; the message says why, for health()."""


@dataclass(frozen=True)
class _Cached:
    answer: User | Group | str | None
    fetched: float  # time.monotonic() of the answer


_CacheKey = tuple[str, str | int]
_Answer = TypeVar("_Answer", User, Group, str)
_Fetch = Callable[[Any], _Answer | None]  # given an open ldap3.Connection


class LdapIdentity:
    """Identities straight from an LDAP directory, with a TTL cache.

    Answers, found or not found, are cached for `ttl` seconds. When the server
    cannot be reached, the last known answer for that exact question is served
    however old it is, and questions never answered before get None: access is
    never widened by guessing. After a failure the server is left alone for
    `retry_interval` seconds, so an outage costs one timeout, not one per lookup.
    """

    def __init__(
        self,
        url: str,
        base_dn: str,
        bind_dn: str | None = None,
        password: str | None = None,
        *,
        schema: LdapSchema = RFC2307,
        timeout: float = 5.0,
        ttl: float = 300.0,
        retry_interval: float = 5.0,
        max_entries: int = 100_000,
    ) -> None:
        self._host, self._port, self._use_ssl = _parse_ldap_url(url)
        if not base_dn.strip():
            raise IdentityError(
                "LDAP base_dn is empty; give the suffix to search, e.g. dc=example,dc=org"
            )
        if (bind_dn is None) != (password is None):
            raise IdentityError(
                "LDAP bind_dn and password go together: give both, or neither for anonymous"
            )
        for name, value in (("timeout", timeout), ("retry_interval", retry_interval)):
            if not value > 0:
                raise IdentityError(
                    f"LDAP {name} must be a positive number of seconds, not {value!r}"
                )
        if max_entries < 1:
            raise IdentityError(f"LDAP max_entries must be at least 1, not {max_entries!r}")
        if not ttl >= 0:
            raise IdentityError(f"LDAP ttl must be zero or more seconds, not {ttl!r}")
        for name in ("user_filter", "group_filter"):
            _check_filter(name, getattr(schema, name))

        self.url = url
        self.base_dn = base_dn
        self._bind_dn = bind_dn
        self._password = password
        self._schema = schema
        self._timeout = timeout
        self._ttl = ttl
        self._retry_interval = retry_interval
        self._max_entries = max_entries

        # _state_lock guards the cache and health fields and is never held over
        # the network; _conn_lock serializes use of the one connection.
        self._state_lock = threading.Lock()
        self._conn_lock = threading.Lock()
        self._conn: ldap3.Connection | None = None
        self._cache: dict[_CacheKey, _Cached] = {}
        self._last_error: str | None = None
        self._last_success: float | None = None
        self._quiet_until = 0.0  # monotonic time before which we do not call the server

    # -- IdentitySource ---------------------------------------------------------------

    def user(self, name: str) -> User | None:
        return self._lookup(("user", name), lambda conn: self._fetch_user_by_name(conn, name))

    def user_by_uid(self, uid: int) -> User | None:
        return self._lookup(("uid", uid), lambda conn: self._fetch_user_by_uid(conn, uid))

    def group(self, name: str) -> Group | None:
        return self._lookup(("group", name), lambda conn: self._fetch_group_by_name(conn, name))

    def group_by_gid(self, gid: int) -> Group | None:
        return self._lookup(("gid", gid), lambda conn: self._fetch_group_by_gid(conn, gid))

    # -- UserAttributes (the object-store principal of a user, policy/objectacl) ----------

    def user_attribute(self, name: str, attribute: str) -> str | None:
        _check_attribute(attribute)
        return self._lookup(
            ("attribute", f"{attribute}\0{name}"),
            lambda conn: self._fetch_attribute(conn, name, attribute),
        )

    def user_with_attribute(self, attribute: str, value: str) -> str | None:
        _check_attribute(attribute)
        return self._lookup(
            ("with-attribute", f"{attribute}\0{value}"),
            lambda conn: self._fetch_user_with(conn, attribute, value),
        )

    def health(self) -> IdentityHealth:
        with self._state_lock:
            return IdentityHealth(
                source=f"ldap {self.url}",
                ok=self._last_error is None,
                last_error=self._last_error,
                last_success=self._last_success,
            )

    def close(self) -> None:
        """Drop the connection; the next lookup that needs the server opens a new one."""
        with self._conn_lock:
            self._drop_connection()

    # -- cache and outage handling ----------------------------------------------------

    def _lookup(self, key: _CacheKey, fetch: _Fetch[_Answer]) -> _Answer | None:
        with self._state_lock:
            cached = self._cache.get(key)
            now = time.monotonic()
            fresh = cached is not None and now - cached.fetched < self._ttl
            quiet = now < self._quiet_until
        # Each key only ever caches what its own fetch returned, so the cast holds.
        last_known = cast("_Answer | None", cached.answer if cached is not None else None)
        if fresh or quiet:
            return last_known
        try:
            answer = self._ask_server(fetch)
        except _Unreachable as error:
            self._record_failure(str(error))
            return last_known
        self._record_success(key, answer)
        return answer

    def _ask_server(self, fetch: _Fetch[_Answer]) -> _Answer | None:
        # Waiting for another thread's call must not outlast our own bound either.
        if not self._conn_lock.acquire(timeout=self._timeout):
            raise _Unreachable(
                f"LDAP server {self.url} is busy: no answer within {self._timeout:g} s"
            )
        try:
            with self._state_lock:
                quiet, last_error = time.monotonic() < self._quiet_until, self._last_error
            if quiet:
                # The thread we waited for has just found the server away.
                raise _Unreachable(last_error or f"LDAP server {self.url} is unreachable")
            while True:
                kept = self._conn is not None
                started = time.monotonic()
                try:
                    return fetch(self._connection())
                except (LDAPException, OSError) as error:
                    self._drop_connection()
                    # A quick failure on a kept connection usually means the server
                    # closed it while idle: try once more on a fresh one. After a slow
                    # failure (a timeout) we give up, so a hung server costs one timeout.
                    if kept and time.monotonic() - started < self._timeout / 2:
                        continue
                    raise _Unreachable(
                        f"LDAP lookup at {self.url} failed: {self._describe(error)}"
                    ) from error
        finally:
            self._conn_lock.release()

    def _describe(self, error: Exception) -> str:
        if not isinstance(error, LDAPOperationResult):
            return str(error)  # socket-level errors already read well
        hint = {
            "invalidCredentials": "; check bind_dn and password",
            "noSuchObject": f"; check that base_dn {self.base_dn!r} exists",
        }.get(str(error.description), "")
        detail = f" ({error.message})" if error.message else ""
        return f"the server answered {error.description}{detail}{hint}"

    def _record_success(self, key: _CacheKey, answer: User | Group | str | None) -> None:
        with self._state_lock:
            if self._last_error is not None:
                event(log, "identity-up", source="ldap", url=self.url)
            self._last_error = None
            self._last_success = time.time()
            # Re-inserting keeps the dict ordered oldest-first, so trimming drops
            # the entries nobody asked about for the longest time.
            self._cache.pop(key, None)
            self._cache[key] = _Cached(answer, time.monotonic())
            while len(self._cache) > self._max_entries:
                del self._cache[next(iter(self._cache))]

    def _record_failure(self, message: str) -> None:
        with self._state_lock:
            if self._last_error is None:
                event(
                    log,
                    "identity-down",
                    severity=logging.WARNING,
                    source="ldap",
                    url=self.url,
                    error=message,
                    msg="serving last known identities until it is back",
                )
            self._last_error = message
            self._quiet_until = time.monotonic() + self._retry_interval

    # -- the connection ---------------------------------------------------------------

    def _connection(self) -> ldap3.Connection:
        if self._conn is None:
            server = ldap3.Server(
                self._host,
                port=self._port,
                use_ssl=self._use_ssl,
                get_info=ldap3.NONE,
                connect_timeout=self._timeout,
            )
            # ldap3 only takes a whole-second receive_timeout; left at None, the
            # socket keeps connect_timeout for every read, which is the bound we want.
            conn = ldap3.Connection(
                server,
                user=self._bind_dn,
                password=self._password,
                client_strategy=ldap3.SYNC,
                read_only=True,
                raise_exceptions=True,
                auto_referrals=False,
                receive_timeout=None,
            )
            conn.bind()
            self._conn = conn
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            # If the server is gone or the socket closed, there is nothing left to release.
            with contextlib.suppress(LDAPException, OSError):
                self._conn.unbind()
            self._conn = None

    def _search(
        self, conn: ldap3.Connection, search_filter: str, attributes: list[str]
    ) -> Iterator[dict[str, Any]]:
        """Yield matching entries as {"dn", "attributes"}, paging past server size limits."""
        cookie: bytes | None = None
        while True:
            conn.search(
                self.base_dn,
                search_filter,
                search_scope=ldap3.SUBTREE,
                attributes=attributes,
                time_limit=max(1, int(self._timeout)),
                paged_size=500,
                paged_cookie=cookie,
            )
            for entry in conn.response or []:
                if entry.get("type") == "searchResEntry":
                    yield entry
            controls = (conn.result or {}).get("controls") or {}
            cookie = controls.get("1.2.840.113556.1.4.319", {}).get("value", {}).get("cookie")
            if not cookie:
                return

    # -- questions to the directory ---------------------------------------------------

    def _fetch_user_by_name(self, conn: ldap3.Connection, name: str) -> User | None:
        s = self._schema
        found = self._users(conn, f"(&{s.user_filter}({s.user_name}={_escape(name)}))")
        # Directory matching of uid is usually case-insensitive; POSIX names are not.
        matches = [(names, uid, gid) for names, uid, gid in found if name in names]
        if not matches:
            return None
        _, uid, gid = matches[0]
        return User(name, uid, gid, self._gids_of(conn, name, gid))

    def _fetch_user_by_uid(self, conn: ldap3.Connection, uid: int) -> User | None:
        s = self._schema
        found = self._users(conn, f"(&{s.user_filter}({s.user_uid}={uid}))")
        matches = [(names, u, gid) for names, u, gid in found if u == uid]
        if not matches:
            return None
        names, _, gid = matches[0]
        return User(names[0], uid, gid, self._gids_of(conn, names[0], gid))

    def _fetch_group_by_name(self, conn: ldap3.Connection, name: str) -> Group | None:
        s = self._schema
        groups = self._groups(conn, f"(&{s.group_filter}({s.group_name}={_escape(name)}))")
        return next((g for names, g in groups if name in names), None)

    def _fetch_group_by_gid(self, conn: ldap3.Connection, gid: int) -> Group | None:
        s = self._schema
        groups = self._groups(conn, f"(&{s.group_filter}({s.group_gid}={gid}))")
        return next((g for _, g in groups if g.gid == gid), None)

    def _fetch_attribute(self, conn: ldap3.Connection, name: str, attribute: str) -> str | None:
        s = self._schema
        search_filter = f"(&{s.user_filter}({s.user_name}={_escape(name)}))"
        values = {
            value
            for entry in self._search(conn, search_filter, [s.user_name, attribute])
            if name in _strings(entry["attributes"].get(s.user_name))
            for value in _strings(entry["attributes"].get(attribute))
        }
        # Two accounts or two values: which one is meant is a guess, and guesses widen access.
        return values.pop() if len(values) == 1 else None

    def _fetch_user_with(self, conn: ldap3.Connection, attribute: str, value: str) -> str | None:
        s = self._schema
        search_filter = f"(&{s.user_filter}({attribute}={_escape(value)}))"
        names = {
            tuple(_strings(entry["attributes"].get(s.user_name)))
            for entry in self._search(conn, search_filter, [s.user_name, attribute])
            # Directory matching may ignore case; a principal is compared exactly.
            if value in _strings(entry["attributes"].get(attribute))
        }
        return names.pop()[0] if len(names) == 1 and names != {()} else None

    def _users(
        self, conn: ldap3.Connection, search_filter: str
    ) -> list[tuple[list[str], int, int]]:
        """(names, uid, gid) of matching accounts, in DN order so answers are stable."""
        s = self._schema
        found = []
        entries = self._search(conn, search_filter, [s.user_name, s.user_uid, s.user_gid])
        for entry in sorted(entries, key=lambda e: str(e["dn"])):
            attrs = entry["attributes"]
            names = _strings(attrs.get(s.user_name))
            uid = _number(attrs.get(s.user_uid))
            gid = _number(attrs.get(s.user_gid))
            if not names or uid is None or gid is None:
                log.warning("LDAP entry %s is not a usable POSIX account; ignored", entry["dn"])
                continue
            found.append((names, uid, gid))
        return found

    def _groups(self, conn: ldap3.Connection, search_filter: str) -> list[tuple[list[str], Group]]:
        """(names, group) of matching groups, in DN order so answers are stable."""
        s = self._schema
        found = []
        entries = self._search(conn, search_filter, [s.group_name, s.group_gid, s.group_member])
        for entry in sorted(entries, key=lambda e: str(e["dn"])):
            attrs = entry["attributes"]
            names = _strings(attrs.get(s.group_name))
            gid = _number(attrs.get(s.group_gid))
            if not names or gid is None:
                log.warning("LDAP entry %s is not a usable POSIX group; ignored", entry["dn"])
                continue
            members = frozenset(_strings(attrs.get(s.group_member)))
            found.append((names, Group(names[0], gid, members)))
        return found

    def _gids_of(self, conn: ldap3.Connection, name: str, primary_gid: int) -> frozenset[int]:
        s = self._schema
        search_filter = f"(&{s.group_filter}({s.group_member}={_escape(name)}))"
        gids = {primary_gid}
        for entry in self._search(conn, search_filter, [s.group_gid]):
            gid = _number(entry["attributes"].get(s.group_gid))
            if gid is not None:
                gids.add(gid)
        return frozenset(gids)


def _parse_ldap_url(url: str) -> tuple[str, int, bool]:
    """(host, port, use_ssl) of an ldap:// or ldaps:// URL; IdentityError says what is wrong."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise IdentityError(f"LDAP url {url!r} is not valid: {error}") from error
    if parts.scheme not in ("ldap", "ldaps"):
        raise IdentityError(
            f"LDAP url {url!r} must start with ldap:// or ldaps://, e.g. ldaps://ldap.example.org"
        )
    if not parts.hostname:
        raise IdentityError(f"LDAP url {url!r} names no host, e.g. ldaps://ldap.example.org:636")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise IdentityError(
            f"LDAP url {url!r} may hold only scheme, host and port; give base_dn separately"
        )
    use_ssl = parts.scheme == "ldaps"
    return parts.hostname, port or (636 if use_ssl else 389), use_ssl


def _check_filter(name: str, search_filter: str) -> None:
    depth = 0
    for char in search_filter:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            break
    if not (search_filter.startswith("(") and search_filter.endswith(")")) or depth != 0:
        raise IdentityError(
            f"LDAP {name} {search_filter!r} is not a filter in parentheses, "
            "e.g. (objectClass=posixAccount)"
        )


def _check_attribute(attribute: str) -> None:
    if not ATTRIBUTE_NAME.fullmatch(attribute):
        raise IdentityError(
            f"LDAP attribute {attribute!r} is not an attribute name (letters, digits and '-', "
            "starting with a letter), e.g. description"
        )


def _escape(value: str) -> str:
    return str(escape_filter_chars(value))


def _strings(value: object) -> list[str]:
    """Values of an attribute as strings; ldap3 gives a list without schema info."""
    if value is None:
        return []
    values = value if isinstance(value, list | tuple) else [value]
    return [str(v) for v in values if str(v)]


def _number(value: object) -> int | None:
    values = _strings(value)
    try:
        return int(values[0]) if values else None
    except ValueError:
        return None
