"""Bucket policy statements that fedfs owns: recognised by their Sid ("fedfs" + hex).

Pure; callable from any thread.
"""

from __future__ import annotations

import re
from typing import Any

_OWNED_SID = re.compile(r"fedfs[0-9a-f]+")


def is_owned(statement: Any) -> bool:
    """True when the statement is one fedfs wrote (and so not the bucket owner's own)."""
    if not isinstance(statement, dict):
        return False
    sid = statement.get("Sid")
    return isinstance(sid, str) and _OWNED_SID.fullmatch(sid) is not None
