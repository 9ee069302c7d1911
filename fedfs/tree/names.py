"""Which S3 keys can be POSIX names, and how names become keys.

A key is shown only if every component is a valid POSIX name: non-empty, not
"." or "..", no NUL, at most 255 bytes, valid UTF-8. Other keys are hidden,
logged once, and listed by `fedfs doctor`; a name that cannot be a key is
refused with EINVAL or ENAMETOOLONG before anything is written.

A new name (create, mkdir, symlink, rename) must also be one the store will
take: no control characters (U+0001-U+001F, U+007F: moto refuses a newline,
XML listings and line-based tools cannot carry them; existing keys with them
are still shown) and a bucket-relative key of at most KEY_MAX UTF-8 bytes
(S3's limit; a directory's key counts its marker's trailing "/").
"""

from __future__ import annotations

import logging

from fedfs.errors import FedfsError
from fedfs.events import event

log = logging.getLogger(__name__)

NAME_MAX = 255
KEY_MAX = 1024  # S3's limit on a key, in UTF-8 bytes
_CONTROL = frozenset(range(0x20)) | {0x7F}
# The file `foo` that is shadowed by a prefix `foo/` appears inside the directory
# `foo` under this name, so it stays reachable through the mount, unless a real key
# `foo/.fedfs-shadowed-file` exists: a real object keeps its name (report_shadow_taken).
SHADOW_NAME = ".fedfs-shadowed-file"
_reported: set[tuple[str, str]] = set()


class BadName(FedfsError):
    """A name that cannot be stored as an S3 key component."""

    def __init__(self, message: str, too_long: bool = False) -> None:
        super().__init__(message)
        self.too_long = too_long


def component_problem(name: str | bytes) -> str | None:
    """Why `name` cannot be one path component, or None if it can."""
    raw = name.encode("utf-8", "surrogateescape") if isinstance(name, str) else name
    if not raw:
        return "empty component"
    if raw in (b".", b".."):
        return f"{raw.decode()!r} component"
    if b"\0" in raw:
        return "NUL byte"
    if b"/" in raw:
        return "'/' inside a name"
    if len(raw) > NAME_MAX:
        return f"component of {len(raw)} bytes (more than {NAME_MAX})"
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return "not valid UTF-8"
    return None


def name_to_str(name: bytes) -> str:
    """A name from the kernel as a key component; BadName if it cannot be one."""
    problem = component_problem(name)
    if problem:
        raise BadName(
            f"{name!r} cannot be stored as an S3 key: {problem}", too_long=len(name) > NAME_MAX
        )
    return name.decode("utf-8")


def new_name(name: bytes) -> str:
    """A name the kernel asks to create: name_to_str, and no control characters."""
    text = name_to_str(name)
    if any(b in _CONTROL for b in name):
        raise BadName(
            f"{name!r} cannot be created: names with control characters (such as a newline) "
            "are refused, since object stores and line-based tools do not keep them intact; "
            "choose a name without them"
        )
    return text


def check_key_length(bucket: str, key: str, is_dir: bool = False) -> None:
    """BadName (ENAMETOOLONG) if the key, with a directory's trailing "/", is over KEY_MAX."""
    size = len(key.encode("utf-8", "surrogateescape")) + (1 if is_dir else 0)
    if size > KEY_MAX:
        raise BadName(
            f"/{bucket}/{key}: the object key would be {size} bytes, more than the "
            f"{KEY_MAX} bytes S3 allows; use shorter names or a shallower tree",
            too_long=True,
        )


def key_problem(key: str) -> str | None:
    """Why an S3 key cannot appear in the tree (checked per component)."""
    body = key[:-1] if key.endswith("/") else key
    for comp in body.split("/"):
        problem = component_problem(comp)
        if problem:
            return problem
    return None


def report_hidden(bucket: str, key: str, problem: str) -> None:
    if (bucket, key) not in _reported:
        _reported.add((bucket, key))
        event(
            log,
            "hidden-key",
            severity=logging.WARNING,
            bucket=bucket,
            key=key,
            reason=problem,
            msg=f"s3://{bucket}/{key!r} is not shown: {problem} (see 'fedfs doctor')",
        )


def report_shadow_taken(bucket: str, dir_key: str) -> None:
    """A real key has the name fedfs gives the file shadowed by the prefix dir_key/."""
    key = f"{dir_key}/{SHADOW_NAME}"
    if (bucket, key) not in _reported:
        _reported.add((bucket, key))
        event(
            log,
            "shadow-name-taken",
            severity=logging.WARNING,
            bucket=bucket,
            key=key,
            shadowed=dir_key,
            msg=f"s3://{bucket}/{key!r} is a real object and is shown under its name, so "
            f"the file s3://{bucket}/{dir_key!r}, shadowed by the prefix {dir_key!r}/, is "
            "not shown; rename one of them with an S3 tool to see both",
        )


def hidden_keys() -> list[tuple[str, str]]:
    return sorted(_reported)


def join(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name
