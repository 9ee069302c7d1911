"""What every doctor check gives: one `Finding` per thing checked, with its status.

OK, WARN or FAIL (SKIP when what a check needs failed first), what was found,
and the fix, in words for the admin who reads it. Plain data, no I/O but
naming a file's owner; imports nothing of fedfs.
"""

from __future__ import annotations

import pwd
from dataclasses import dataclass

OK, WARN, FAIL, SKIP = "OK", "WARN", "FAIL", "SKIP"


@dataclass(frozen=True)
class Finding:
    check: str
    status: str
    found: str
    fix: str = ""
    details: tuple[str, ...] = ()  # e.g. the hidden keys, one per line


def owner(uid: int) -> str:
    """A file owner as a finding names it: the user's name and uid, or the bare uid."""
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"
