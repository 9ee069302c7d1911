"""The control protocol: what a request line and an answer line look like.

Owns the wire format both ends share: JSON lines, one each way, versioned.
A connection may carry several requests:

    -> {"v": 1, "op": "share-add", "args": {"path": "/x", "who": "bob"}}
    <- {"v": 1, "ok": true, "result": ...}
    <- {"v": 1, "ok": false, "error": "<a sentence for a person>", "code": "refused"}

Codes the server itself answers with: "bad-request", "version", "too-large",
"busy", "internal"; a `FedfsError` from the handler gives its `code`
attribute, or "refused". The client adds "unreachable", "timeout",
"disconnected" and "protocol" for failures on its side.

Pure functions and data, no I/O: safe from any thread. Imports only errors.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fedfs.errors import FedfsError

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = (1,)

# What an "op" and an error "code" may be.
NAME = re.compile(r"[a-z][a-z0-9-]{0,40}")
_EXAMPLE = '{"v": 1, "op": "status", "args": {}}'


class ControlError(FedfsError):
    """A control request failed; `code` is a short machine-readable reason."""

    def __init__(self, message: str, code: str = "refused") -> None:
        super().__init__(message)
        self.code = code


class BadRequest(Exception):
    """A request line the server answers itself, without calling the handler."""

    def __init__(self, message: str, code: str = "bad-request") -> None:
        super().__init__(message)
        self.code = code


def request_line(op: str, args: dict[str, Any]) -> bytes:
    """One request, as the client sends it."""
    return (json.dumps({"v": PROTOCOL_VERSION, "op": op, "args": args}) + "\n").encode()


def encode(answer: dict[str, Any]) -> bytes:
    """One answer line."""
    # ensure_ascii: strings from a request may hold lone surrogates ("\ud800"),
    # which cannot be encoded as UTF-8 but are fine as \u escapes.
    # allow_nan=False: NaN is not JSON, and every answer must parse anywhere.
    return (json.dumps(answer, ensure_ascii=True, allow_nan=False) + "\n").encode("ascii")


def success(result: Any) -> dict[str, Any]:
    return {"v": PROTOCOL_VERSION, "ok": True, "result": result}


def failure(message: str, code: str) -> dict[str, Any]:
    return {"v": PROTOCOL_VERSION, "ok": False, "error": message, "code": code}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)


def parse_request(line: bytes) -> tuple[str, dict[str, Any]]:
    """The op and args of one request line, or BadRequest saying what is wrong."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRequest(
            f"the request is not valid UTF-8 (byte {e.start}); send one JSON object per line"
        ) from None
    if not text.strip():
        raise BadRequest(
            f"the request line is empty; send one JSON object per line, like {_EXAMPLE}"
        )
    try:
        request = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise BadRequest(
            f"the request is not valid JSON ({e.msg} at column {e.colno});"
            " send one JSON object per line"
        ) from None
    except (ValueError, RecursionError):
        # NaN/Infinity, integers beyond Python's digit limit, absurd nesting.
        raise BadRequest(
            "the request is JSON this daemon does not accept (NaN, Infinity, a number of"
            " thousands of digits or nesting thousands deep); send plain JSON values"
        ) from None
    if not isinstance(request, dict):
        raise BadRequest(
            f"the request must be a JSON object like {_EXAMPLE}, not {_json_type(request)}"
        )
    version = request.get("v")
    # type() rather than isinstance(): JSON true must not pass for version 1.
    if type(version) is not int or version not in SUPPORTED_VERSIONS:
        supported = ", ".join(str(v) for v in SUPPORTED_VERSIONS)
        got = 'no "v"' if "v" not in request else f'"v": {json.dumps(version)[:40]}'
        raise BadRequest(
            f"this fedfs daemon speaks control protocol version {supported}; the request has {got}"
            " (are the fedfs command and the daemon the same release?)",
            "version",
        )
    op = request.get("op")
    if not isinstance(op, str) or not NAME.fullmatch(op):
        got = 'no "op"' if "op" not in request else _json_type(op)
        if isinstance(op, str):
            got = f'"op": {json.dumps(op[:40])}'
        raise BadRequest(
            'the request\'s "op" must be a name like "status" (a lowercase letter, then up to 40'
            f" lowercase letters, digits or dashes); the request has {got}"
        )
    args = request.get("args", {})
    if not isinstance(args, dict):
        raise BadRequest(f'the request\'s "args" must be a JSON object, not {_json_type(args)}')
    return op, args
