"""What a bucket's own access control gives in the POSIX view: the import mapping.

Reads a bucket policy document (any text: hostile, huge, wrong types) and a
GetBucketAcl answer, and returns the rights they state for local users, the
denials, and every statement that cannot be mapped faithfully with its Sid and
the reason. The rule (docs/OBJECT_ACL.md "Import"): an Allow grants in POSIX only
what the store grants, never more (each right has the shape of the keys or
listings it covers, model.Shape: `B/P/*` never the object P, GetObject never a
listing); anything not understood makes the Allow give nothing, except extra
principals, actions or resources, which are left out (and reported) while the
rest applies. A Deny is applied in full (all access of that
user there), wider rather than narrower when it cannot be mapped exactly. Bucket
ACL grants never let anyone read objects on the store, so they give nothing here
and are reported.
Pure and without I/O; callable from any thread. Calls only policy/model.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from fedfs.errors import PolicyError
from fedfs.policy.model import (
    BELOW,
    LIST,
    LIST_ONE,
    PREFIX,
    Level,
    Shape,
    check_shape,
    normalize_path,
)

MAX_DOCUMENT = 1 << 20  # bytes of policy text read; RGW and S3 keep theirs far smaller
MAX_STATEMENTS = 1000
MAX_ITEMS = 1000  # principals, actions or resources in one statement
MAX_RULES = 2000  # (principal, path, action) triples of Allows, and of Denies, in all
MAX_REPORTED = 200  # unmappable statements listed; the rest are counted
EVERYONE = "*"  # who: "other" in POSIX
ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
AUTHENTICATED_USERS = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"

_GET, _PUT, _DELETE, _LIST = "s3:getobject", "s3:putobject", "s3:deleteobject", "s3:listbucket"
_MAPPED_ACTIONS = (_GET, _PUT, _DELETE, _LIST)
_ELEMENTS = frozenset(
    {"Sid", "Effect", "Principal", "NotPrincipal", "Action", "NotAction"}
    | {"Resource", "NotResource", "Condition"}
)
_BEFORE_OPS = {"datelessthan", "datelessthanequals"}
_EXACT_KEYS = {"aws:CurrentTime", "s3:prefix"}
_EXACT_OPS = {
    "DateLessThan",
    "DateLessThanEquals",
    "DateGreaterThan",
    "DateGreaterThanEquals",
    "StringEquals",
    "StringLike",
}
_TENANT_ROOT = re.compile(r"arn:aws:iam::[^:/]*:root")
_ISO_Z = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z")
_AFTER_OPS = {"dategreaterthan", "dategreaterthanequals"}
_PREFIX_OPS = {"stringequals", "stringlike"}
_UNSAFE_KEY = re.compile(r"[\x00-\x1f\x7f]")


# What a bucket ACL grant lets its grantee do through S3 (none of them reads objects).
_BUCKET_ACL_GIVES = {
    "READ": "list the bucket",
    "WRITE": "add and delete objects",
    "FULL_CONTROL": "list the bucket and add and delete objects",
}


@dataclass(frozen=True, slots=True)
class Right:
    """Access a bucket policy statement or the bucket ACL gives in POSIX: who, where, how much."""

    path: str  # "/bucket" or "/bucket/prefix"
    who: str  # a local user name, or EVERYONE ("other")
    level: int  # Level.READ or Level.WRITE
    source: str  # "bucket-policy:SID" or "bucket-acl"
    expires: float | None = None
    # What of path it covers (model.Shape): BELOW for "B/P/*" (never the object P itself),
    # PREFIX for "B/P*" (P and what is under P/), LIST / LIST_ONE for s3:ListBucket.
    shape: Shape = BELOW
    since: float | None = None  # when this right was first observed (importer.py sets it)


@dataclass(frozen=True, slots=True)
class Denial:
    """A Deny: who loses all access at path and below (EVERYONE: "other" does)."""

    path: str
    who: str
    source: str
    since: float | None = None  # when this denial was first observed (importer.py sets it)


@dataclass(frozen=True, slots=True)
class Unmapped:
    """A statement (or ACL grant) not mapped faithfully: what it is and why."""

    sid: str  # the statement's Sid, "#N" (its index) without one, or "acl:GRANTEE"
    reason: str


@dataclass(frozen=True, slots=True)
class Observed:
    """Everything one bucket's policy and ACL give in POSIX, as observed at one time."""

    bucket: str
    rights: tuple[Right, ...] = ()
    denials: tuple[Denial, ...] = ()
    unmapped: tuple[Unmapped, ...] = ()

    def to_json(self) -> str:
        """The observation as canonical JSON (same rights, same text: applying it is idempotent)."""
        return json.dumps(
            {
                "bucket": self.bucket,
                "rights": [asdict(r) for r in self.rights],
                "denials": [asdict(d) for d in self.denials],
                "unmapped": [asdict(u) for u in self.unmapped],
            },
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> Observed:
        """Read to_json's text back; PolicyError if it is not one."""
        try:
            data = json.loads(text)
            return cls(
                str(data["bucket"]),
                tuple(
                    Right(
                        normalize_path(str(r["path"])),
                        str(r["who"]),
                        Level(int(r["level"])),
                        str(r["source"]),
                        None if r["expires"] is None else float(r["expires"]),
                        # (observations from before shapes: every right was "B/P/*")
                        check_shape(str(r.get("shape", BELOW))),
                        None if r.get("since") is None else float(r["since"]),
                    )
                    for r in data["rights"]
                ),
                tuple(
                    Denial(
                        normalize_path(str(d["path"])),
                        str(d["who"]),
                        str(d["source"]),
                        None if d.get("since") is None else float(d["since"]),
                    )
                    for d in data["denials"]
                ),
                tuple(Unmapped(str(u["sid"]), str(u["reason"])) for u in data["unmapped"]),
            )
        except (ValueError, KeyError, TypeError, AttributeError, PolicyError) as e:
            raise PolicyError(f"an object-side observation that cannot be read: {e}") from None


UserOf = Callable[[str], "str | None"]


def observe(
    bucket: str,
    policy: str | None,
    acl: Any,
    user_of: UserOf,
    now: float,
    owned: Callable[[Any], bool] = lambda statement: False,
) -> Observed:
    """What bucket's policy text and GetBucketAcl answer give in POSIX at time now.

    user_of: the local user a principal ("arn:aws:iam:::user/NAME") stands for, or None.
    owned: statements fedfs wrote itself (export), which are left out here.
    Never raises: whatever cannot be read is reported in `unmapped` and gives nothing.
    """
    found = _Found(bucket, now)
    if policy is not None:
        found.policy(policy, user_of, owned)
    if acl is not None:
        found.acl(acl, user_of)
    return found.result()


@dataclass(frozen=True, slots=True)
class Prefixes:
    """An s3:prefix condition: its values, and whether they are patterns (StringLike)."""

    like: bool
    values: tuple[str, ...]


@dataclass(slots=True)
class _Cap:
    """One mapped action of one statement for one principal under one path."""

    who: str
    path: str
    action: str
    expires: float | None
    sid: str
    shape: Shape = BELOW


class _Found:
    def __init__(self, bucket: str, now: float) -> None:
        self.bucket = bucket
        self.now = now
        self.caps: list[_Cap] = []
        self.denials: list[Denial] = []
        self.unmapped: list[Unmapped] = []
        self.acl_rights: list[Right] = []
        self.full = False  # too many rules: no more Allows are read

    def add_cap(self, cap: _Cap) -> None:
        if self.full:
            return
        if len(self.caps) >= MAX_RULES:
            self.report(cap.sid, f"over {MAX_RULES} rights in the policy; the rest give nothing")
            self.full = True
            return
        self.caps.append(cap)

    def report(self, sid: str, reason: str) -> None:
        self.unmapped.append(Unmapped(sid, reason))

    # -- the policy document ---------------------------------------------------

    def policy(self, text: str, user_of: UserOf, owned: Callable[[Any], bool]) -> None:
        if not isinstance(text, str):
            self.report("policy", "the bucket policy is not text; nothing in it is mapped")
            return
        if len(text) > MAX_DOCUMENT:
            self.report(
                "policy", f"the bucket policy is larger than {MAX_DOCUMENT} bytes; nothing mapped"
            )
            return
        try:
            document = json.loads(text, object_pairs_hook=_no_duplicates)
        except (ValueError, RecursionError) as e:
            reason = str(e)[:200]
            self.report("policy", f"the bucket policy is not valid JSON ({reason}); nothing mapped")
            return
        statements = document.get("Statement") if isinstance(document, dict) else None
        if isinstance(statements, dict):
            statements = [statements]
        if not isinstance(statements, list):
            self.report("policy", "the bucket policy has no Statement list; nothing mapped")
            return
        for index, statement in enumerate(statements):
            if index >= MAX_STATEMENTS:
                rest = statements[index:]
                if any(isinstance(s, dict) and s.get("Effect") != "Allow" for s in rest):
                    # a Deny not read could deny anyone anything: read it as widely as it may
                    root = f"/{self.bucket}"
                    self.denials = [Denial(root, EVERYONE, f"bucket-policy:#{index}")]
                    self.caps, self.full = [], True
                self.report(
                    f"#{index}",
                    f"only the first {MAX_STATEMENTS} statements are read; the rest give "
                    "nothing, and a Deny among them denies everyone all of the bucket",
                )
                break
            try:
                if owned(statement):
                    continue
                self.statement(index, statement, user_of)
            except (RecursionError, MemoryError):
                self.report(f"#{index}", "too deeply nested to read; nothing mapped")

    def statement(self, index: int, st: Any, user_of: UserOf) -> None:
        if not isinstance(st, dict):
            self.report(f"#{index}", "a statement that is not a JSON object; nothing mapped")
            return
        sid = _sid(st.get("Sid"), index)
        effect = st.get("Effect")
        if effect not in ("Allow", "Deny"):
            self.report(sid, f"Effect {_short(effect)} is neither Allow nor Deny; nothing mapped")
            return
        if effect == "Deny":
            self.denied(sid, st, user_of)
            return
        unknown = sorted(k if isinstance(k, str) else repr(k) for k in st if k not in _ELEMENTS)
        for element in ("NotPrincipal", "NotAction", "NotResource"):
            if element in st:
                self.report(
                    sid, f"{element} cannot be mapped to POSIX; the statement gives nothing"
                )
                return
        if unknown:
            self.report(sid, f"unknown element {_short(unknown[0])}; the statement gives nothing")
            return
        window = self.condition(sid, st.get("Condition"), True)
        if window is None:
            return
        expires, prefixes = window
        whos = self.principals(sid, st.get("Principal"), user_of, True)
        actions = self.actions(sid, st.get("Action"), True)
        if not whos or not actions:
            return
        places = self.resources(sid, st.get("Resource"), True)
        self.allow(sid, whos, actions, places, expires, prefixes)

    def denied(self, sid: str, st: dict[str, Any], user_of: UserOf) -> None:
        """A Deny: whatever of it cannot be read exactly is read as wide as it may reach
        (everyone, every action, the whole bucket), so POSIX never allows what it denies."""
        root = f"/{self.bucket}"
        window = self.condition(sid, st.get("Condition"), False)
        if window is None:
            return  # its time is over
        prefixes = window[1]
        wide: list[str] = []
        principal = st.get("Principal")
        if "Principal" in st and (principal == "*" or _aws_only(principal)):
            whos = self.principals(sid, principal, user_of, False)
        else:
            whos = [EVERYONE]
            wide.append("everyone")
        action = _strings(st.get("Action")) if "Action" in st else None
        if action:
            actions = self.actions(sid, action, False)
        else:
            actions, prefixes = set(_MAPPED_ACTIONS), None
            wide.append("every action")
        resource = _strings(st.get("Resource")) if "Resource" in st else None
        if resource:
            places = self.resources(sid, resource, False)
        else:
            places = [(root, "both")]
            wide.append(f"all of {root}")
        if wide:
            self.report(
                sid, f"this Deny cannot be mapped exactly; it is applied to {', '.join(wide)}"
            )
        if whos and actions:
            self.deny(sid, whos, actions, places, prefixes)

    def condition(
        self, sid: str, condition: Any, allow: bool
    ) -> tuple[float | None, Prefixes | None] | None:
        """(expiry, s3:prefix values) of a Condition, or None when the statement gives nothing."""
        if condition is None:
            return None, None
        ignored = "gives nothing" if allow else "is applied without it (stricter than the store)"
        if not isinstance(condition, dict):
            self.report(sid, f"a Condition that is not a JSON object; the statement {ignored}")
            return None if allow else (None, None)
        expires: float | None = None
        start: float | None = None
        prefixes: Prefixes | None = None
        for op, body in condition.items():
            # the store matches operators and keys as written (measured on RGW 16:
            # aws:currenttime or a date with an offset made the statement not apply)
            name = op.lower() if op in _EXACT_OPS else ""
            if not isinstance(body, dict) or not body:
                self.report(
                    sid, f"condition {_short(op)} is not understood; the statement {ignored}"
                )
                return None if allow else (None, None)
            for key, raw in body.items():
                values = _strings(raw)
                key_l = key.lower() if key in _EXACT_KEYS else ""
                if values is None or not values:
                    bad = f"condition {_short(op)} on {_short(key)} has values that are not text"
                    self.report(sid, f"{bad}; the statement {ignored}")
                    return None if allow else (None, None)
                if key_l == "aws:currenttime" and name in _BEFORE_OPS | _AFTER_OPS:
                    times = [_epoch(v) for v in values]
                    if any(t is None for t in times):
                        self.report(sid, f"a date in {_short(op)} is not ISO 8601; {ignored}")
                        return None if allow else (None, None)
                    known = [t for t in times if t is not None]
                    if name in _BEFORE_OPS:  # any value may hold: the latest counts
                        latest = max(known)
                        expires = latest if expires is None else min(expires, latest)
                    else:
                        earliest = min(known)
                        start = earliest if start is None else max(start, earliest)
                elif key_l == "s3:prefix" and name in _PREFIX_OPS and prefixes is None:
                    prefixes = Prefixes(name == "stringlike", tuple(values))
                else:
                    self.report(
                        sid,
                        f"condition {_short(op)} on {_short(key)} cannot be mapped to POSIX "
                        f"(only aws:CurrentTime dates and s3:prefix are); the statement {ignored}",
                    )
                    return None if allow else (None, None)
        if allow and start is not None and self.now < start:
            return None  # not yet in force; a later observation picks it up
        if allow and expires is not None and self.now >= expires:
            return None  # ended
        if not allow and expires is not None and self.now >= expires:
            return None
        return expires, prefixes

    def principals(self, sid: str, principal: Any, user_of: UserOf, allow: bool) -> list[str]:
        """The local users (or EVERYONE) a Principal names; the rest is reported."""
        if principal == "*":
            return [EVERYONE]
        if not isinstance(principal, dict):
            self.report(sid, 'a Principal that is not "*" or a JSON object; nothing mapped')
            return []
        whos: list[str] = []
        for kind, raw in principal.items():
            values = _strings(raw)
            if kind != "AWS" or values is None:
                if not allow:
                    self.report(sid, f"principal type {_short(kind)}: the Deny is for everyone")
                    whos.append(EVERYONE)
                    continue
                self.report(sid, f"principal type {_short(kind)} is not mapped; it gets nothing")
                continue
            if not allow and len(values) > MAX_ITEMS:
                self.report(sid, f"more than {MAX_ITEMS} principals: the Deny is for everyone")
                whos.append(EVERYONE)
            for value in values[:MAX_ITEMS]:
                if value == "*" or (not allow and _TENANT_ROOT.fullmatch(value)):
                    whos.append(EVERYONE)  # a tenant's root stands for all its users
                    continue
                user = _safe(user_of, value)
                if user is None:
                    if allow:
                        self.report(
                            sid, f"principal {_short(value)} has no local user; it gets nothing"
                        )
                else:
                    whos.append(user)
        return sorted(set(whos))

    def actions(self, sid: str, action: Any, allow: bool) -> set[str]:
        values = _strings(action)
        if values is None or not values:
            if allow:
                self.report(sid, "an Action that is not text or a list of text; nothing mapped")
            return set()
        found: set[str] = set()
        for value in values[:MAX_ITEMS]:
            matched = {a for a in _MAPPED_ACTIONS if _glob(value.lower()).fullmatch(a)}
            if not matched and allow:
                self.report(sid, f"action {_short(value)} has no POSIX counterpart; not mapped")
            found |= matched
        return found

    def resources(self, sid: str, resource: Any, allow: bool) -> list[tuple[str, str]]:
        """(path, kind) for each resource of this bucket that can be mapped; kind is
        "bucket" (the bucket itself: listing), "objects" (keys under path + "/"),
        "prefix" (an Allow's "B/P*": the key P and those under P/) or "both"; "both"
        is the whole bucket: listing and every key."""
        values = _strings(resource)
        if values is None or not values:
            self.report(sid, "a Resource that is not text or a list of text; nothing mapped")
            return []
        places: list[tuple[str, str]] = []
        if not allow and len(values) > MAX_ITEMS:
            self.report(sid, f"more than {MAX_ITEMS} resources: the Deny is applied to all of it")
            places.append((f"/{self.bucket}", "both"))
        for value in values[:MAX_ITEMS]:
            place = self.resource(sid, value, allow)
            if place is not None:
                places.append(place)
        return places

    def resource(self, sid: str, value: str, allow: bool) -> tuple[str, str] | None:
        root = f"/{self.bucket}"
        if value in ("*", "arn:aws:s3:::*"):
            return root, "both"
        arn = "arn:aws:s3:::"
        if not value.startswith(arn):
            if not allow:  # arn:*:s3:::..., arn:aws:s3:*:*:...: the store may read it widely
                self.report(sid, f"resource {_short(value)}: the Deny is applied to all of {root}")
                return root, "both"
            self.report(sid, f"resource {_short(value)} is not an S3 ARN; not mapped")
            return None
        name, slash, key = value[len(arn) :].partition("/")
        if name != self.bucket:
            wild = "*" in name or "?" in name
            if wild and not allow:
                self.report(sid, f"resource {_short(value)}: the Deny is applied to all of {root}")
                return root, "both"  # a Deny that may cover this bucket: all of it
            if allow:
                why = "has a wildcard in the bucket name" if wild else "names another bucket"
                self.report(sid, f"resource {_short(value)} {why}; not mapped")
            return None
        if not slash:
            return root, "bucket"
        cut = min((i for i in (key.find("*"), key.find("?")) if i >= 0), default=-1)
        if cut < 0:
            exact = _key_path(root, key)
            if allow:
                self.report(
                    sid,
                    f"resource {_short(value)} names one object; fedfs maps prefixes "
                    'ending in "/*"; not mapped',
                )
                return None
            return exact or root, "objects"
        prefix = key[:cut]
        aligned = cut == len(key) - 1 and (not prefix or prefix.endswith("/"))
        path = _key_path(root, prefix[:-1]) if prefix else root
        if aligned and path is not None:
            return path, "objects"
        named = _key_path(root, prefix) if cut == len(key) - 1 and prefix else None
        if allow and named is not None:
            # "B/P*": the keys P, P/... and Pxyz...; the mount shows the first two as the
            # path P (a file, a directory or both) and the others as other names, which
            # one right cannot name: those are left out (narrower than the store).
            self.report(
                sid,
                f"resource {_short(value)} also covers keys that only start with "
                f"{_short(prefix)} (such as {_short(prefix + '2/x')}); only {_short(prefix)} "
                "itself and what is under it are mapped",
            )
            return named, "prefix"
        if allow:
            self.report(
                sid,
                f'resource {_short(value)}: only a trailing "*" after a "/" is mapped; not mapped',
            )
            return None
        # A Deny that cannot be placed exactly covers the nearest whole directory above it.
        wider = _wider(root, prefix)
        self.report(sid, f"resource {_short(value)}: the Deny is applied to {wider}")
        return wider, "objects"

    def allow(
        self,
        sid: str,
        whos: list[str],
        actions: set[str],
        places: list[tuple[str, str]],
        expires: float | None,
        prefixes: Prefixes | None,
    ) -> None:
        object_actions = actions - {_LIST}
        if prefixes is not None and object_actions:
            # The s3:prefix key is absent from object requests: the condition fails for them.
            self.report(sid, "s3:prefix applies to listing only; its object actions give nothing")
            object_actions = set()
        for path, kind in places:
            for who in whos:
                if kind in ("bucket", "both") and _LIST in actions:
                    for prefix, shape in self.list_prefixes(prefixes):
                        self.add_cap(_Cap(who, prefix, _LIST, expires, sid, shape))
                if kind != "bucket":
                    shape = PREFIX if kind == "prefix" else BELOW
                    for action in sorted(object_actions):
                        self.add_cap(_Cap(who, path, action, expires, sid, shape))

    def list_prefixes(self, prefixes: Prefixes | None) -> list[tuple[str, Shape]]:
        """The directories a ListBucket lets one list: (path, LIST) for a directory and all
        below it, (path, LIST_ONE) for that directory alone. The mount lists a directory
        with Prefix="KEY/" (the bucket's root with ""), so a value counts where it matches
        those exactly; any other pattern is left out (narrower than the store)."""
        root = f"/{self.bucket}"
        if prefixes is None:
            return [(root, LIST)]
        found: list[tuple[str, Shape]] = []
        for value in prefixes.values:
            wild = prefixes.like and ("*" in value or "?" in value)
            if not wild:  # exactly one listing: "" (the root) or "DIR/"
                if value == "":
                    found.append((root, LIST_ONE))
                elif value.endswith("/") and (path := _key_path(root, value[:-1])) is not None:
                    found.append((path, LIST_ONE))
                continue
            stem = value[:-1]
            if not value.endswith("*") or "*" in stem or "?" in stem:
                continue
            # "DIR/*" and "DIR*" match "DIR/" and every "DIR/.../": DIR and all below it
            # ("DIR*" also matches "DIRxyz/", which is left out).
            if not stem:
                found.append((root, LIST))
            elif (path := _key_path(root, stem.removesuffix("/"))) is not None:
                found.append((path, LIST))
        return found

    def deny(
        self,
        sid: str,
        whos: list[str],
        actions: set[str],
        places: list[tuple[str, str]],
        prefixes: Prefixes | None,
    ) -> None:
        root = f"/{self.bucket}"
        paths: list[str] = []
        for path, kind in places:
            if kind != "bucket" and actions - {_LIST}:
                paths.append(path)
            if kind != "objects" and _LIST in actions:
                if prefixes is None:
                    paths.append(root)
                else:
                    paths.extend(_wider(root, value) for value in prefixes.values)
        for who in whos:
            for path in paths:
                if len(self.denials) >= MAX_RULES:
                    # Too many to follow one by one: the widest Deny there is.
                    self.report(sid, f"over {MAX_RULES} denials; all of {root} is denied to all")
                    self.denials = [Denial(root, EVERYONE, f"bucket-policy:{sid}")]
                    self.caps = []
                    self.full = True
                    return
                self.denials.append(Denial(path, who, f"bucket-policy:{sid}"))

    # -- the bucket ACL ------------------------------------------------------------

    def acl(self, answer: Any, user_of: UserOf) -> None:
        if not isinstance(answer, dict):
            self.report("acl", "the bucket ACL answer is not a mapping; nothing mapped")
            return
        owner = answer.get("Owner")
        owner_id = owner.get("ID") if isinstance(owner, dict) else None
        grants = answer.get("Grants")
        if not isinstance(grants, list):
            return
        for grant in grants[:MAX_ITEMS]:
            if not isinstance(grant, dict) or not isinstance(grant.get("Grantee"), dict):
                self.report("acl", "a bucket ACL grant without a grantee; not mapped")
                continue
            grantee, permission = grant["Grantee"], grant.get("Permission")
            gives = _BUCKET_ACL_GIVES.get(permission if isinstance(permission, str) else "")
            if gives is None:
                continue  # READ_ACP / WRITE_ACP: about the ACL itself, no POSIX counterpart
            kind, uri, gid = grantee.get("Type"), grantee.get("URI"), grantee.get("ID")
            if kind == "CanonicalUser" and gid == owner_id:
                continue  # the owner's own grant: the owner has its bucket anyway
            # On the store a bucket ACL grant never lets anyone read objects (measured on
            # RGW 16: READ lists, WRITE puts, FULL_CONTROL both; GET is refused), and POSIX
            # has no list-only or write-only right: mapping it to read or write would give
            # more through the mount than the store gives. It is reported instead.
            label = _short(gid if isinstance(gid, str) else uri or kind)
            self.report(
                f"acl:{label}",
                f"a bucket ACL {permission} grant lets its grantee {gives} through S3 but not "
                "read objects; fedfs maps no such right (to share for reading, allow "
                "s3:GetObject in the bucket policy)",
            )

    # -- putting it together -------------------------------------------------------

    def result(self) -> Observed:
        rights = self.combine() + self.acl_rights
        denials = self.expand_denials(rights)
        kept = [
            r
            for r in rights
            if not any(_covers(d.path, r.path) and d.who == r.who for d in denials)
        ]
        unmapped = list(dict.fromkeys(self.unmapped))
        if len(unmapped) > MAX_REPORTED:
            more = len(unmapped) - MAX_REPORTED
            unmapped = [*unmapped[:MAX_REPORTED], Unmapped("...", f"{more} more not listed")]
        return Observed(
            self.bucket,
            tuple(sorted(set(kept), key=_right_key)),
            tuple(sorted(set(denials), key=lambda d: (d.path, d.who, d.source))),
            tuple(unmapped),
        )

    def combine(self) -> list[Right]:
        """Rights from the statements' actions: read needs get; write needs get, put and
        delete on the same keys; listing (ListBucket) makes directories readable."""
        by_who: dict[str, list[_Cap]] = {}
        for cap in self.caps:
            by_who.setdefault(cap.who, []).append(cap)
        rights: list[Right] = []
        gave: set[str] = set()
        for who, caps in by_who.items():
            for cap in caps:
                source = f"bucket-policy:{cap.sid}"
                if cap.action in (_GET, _LIST):
                    rights.append(Right(cap.path, who, Level.READ, source, cap.expires, cap.shape))
                    gave.add(cap.sid)
                elif cap.action == _PUT:
                    (reads, read), (deletes, delete) = (
                        _until(caps, _GET, cap),
                        _until(caps, _DELETE, cap),
                    )
                    if not (reads and deletes):
                        self.report(
                            cap.sid,
                            "s3:PutObject is shown as POSIX write only where the same user "
                            "may also s3:GetObject and s3:DeleteObject (write in POSIX lets "
                            f"one read and delete); not mapped as write at {cap.path}",
                        )
                        continue
                    ends = [e for e in (cap.expires, read, delete) if e is not None]
                    expires = min(ends) if ends else None
                    rights.append(Right(cap.path, who, Level.WRITE, source, expires, cap.shape))
                    gave.add(cap.sid)
        for cap in self.caps:
            if cap.action == _DELETE and cap.sid not in gave:
                self.report(
                    cap.sid,
                    "s3:DeleteObject without s3:PutObject has no POSIX counterpart; not mapped",
                )
                gave.add(cap.sid)
        return rights

    def expand_denials(self, rights: list[Right]) -> list[Denial]:
        """A Deny for everyone also takes away each user's imported access there."""
        found = list(self.denials)
        for d in self.denials:
            if d.who != EVERYONE:
                continue
            for r in rights:
                if r.who != EVERYONE and (_covers(r.path, d.path) or _covers(d.path, r.path)):
                    found.append(Denial(d.path, r.who, d.source))
        return found


def _until(caps: list[_Cap], action: str, wanted: _Cap) -> tuple[bool, float | None]:
    """(whether the user holds `action` on every key wanted covers, when that ends: None never)."""
    held = False
    latest: float | None = None
    for cap in caps:
        if cap.action == action and _keys_cover(cap, wanted):
            if cap.expires is None:
                return True, None
            latest = cap.expires if latest is None else max(latest, cap.expires)
            held = True
    return held, latest


def _keys_cover(cap: _Cap, wanted: _Cap) -> bool:
    """Whether cap's keys include all of wanted's (both BELOW or PREFIX shapes)."""
    if not _covers(cap.path, wanted.path):
        return False
    return cap.path != wanted.path or cap.shape == PREFIX or wanted.shape == BELOW


def _covers(above: str, path: str) -> bool:
    return path == above or path.startswith(above + "/")


def _right_key(r: Right) -> tuple[str, str, int, str, float, str]:
    return (r.path, r.who, r.level, r.source, -1.0 if r.expires is None else r.expires, r.shape)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise ValueError(f"the key {key!r} appears twice in one object")
        found[key] = value
    return found


def _aws_only(principal: Any) -> bool:
    return (
        isinstance(principal, dict)
        and set(principal) == {"AWS"}
        and _strings(principal["AWS"]) is not None
    )


def _strings(value: Any) -> list[str] | None:
    """A text value or a list of text values as a list; None for anything else."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def _glob(pattern: str) -> re.Pattern[str]:
    """IAM wildcards: * any run, ? one character; nothing else is special."""
    return re.compile(
        "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    )


def _wider(root: str, key: str) -> str:
    """The nearest whole directory above a key pattern: where a Deny covers all it may."""
    cut = min((i for i in (key.find("*"), key.find("?")) if i >= 0), default=len(key))
    stem = key[:cut]
    cut_dir = stem.rfind("/")
    return (_key_path(root, stem[:cut_dir]) if cut_dir > 0 else root) or root


def _key_path(root: str, key: str) -> str | None:
    """/bucket/key for a key the mount shows as that path, or None (empty, ".", "..", controls)."""
    parts = key.split("/")
    if any(p in ("", ".", "..") or len(p) > 255 or _UNSAFE_KEY.search(p) for p in parts):
        return None
    try:
        return normalize_path(root + "/" + key)
    except PolicyError:
        return None


def _epoch(text: str) -> float | None:
    """A date as the store reads aws:CurrentTime values: YYYY-MM-DDTHH:MM:SS[.f]Z only."""
    if not _ISO_Z.fullmatch(text):
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _safe(user_of: UserOf, principal: str) -> str | None:
    try:
        user = user_of(principal)
    except Exception:
        return None
    return user if isinstance(user, str) and user and user != EVERYONE else None


def _sid(sid: Any, index: int) -> str:
    if isinstance(sid, str) and sid and len(sid) <= 128 and sid.isprintable():
        return sid
    return f"#{index}"


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)[:80]
    text = "".join(c if c.isprintable() else "?" for c in text)
    return repr(text[:80] + ("..." if len(text) > 80 else ""))
