"""Which store answers are permanent (refused for good) and which are worth a retry."""

from __future__ import annotations

import botocore.exceptions
import pytest

from fedfs.errors import NotFound, StoreRefused, Unavailable
from fedfs.store.s3 import translate


def client_error(code: str, status: int) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError(
        {
            "Error": {"Code": code, "Message": "m"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "PutObject",
    )


@pytest.mark.parametrize(
    ("code", "status"),
    [("InvalidArgument", 400), ("KeyTooLongError", 400), ("InvalidObjectName", 400), ("400", 400)],
)
def test_a_request_the_store_never_accepts_is_refused_for_good(code: str, status: int) -> None:
    assert isinstance(translate(client_error(code, status), "s3://b/k"), StoreRefused)


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("SlowDown", 503),
        ("InternalError", 500),
        ("ServiceUnavailable", 503),
        ("RequestTimeout", 400),
    ],
)
def test_throttling_5xx_and_timeouts_stay_transient(code: str, status: int) -> None:
    assert isinstance(translate(client_error(code, status), "s3://b/k"), Unavailable)


def test_not_found_stays_not_found() -> None:
    assert isinstance(translate(client_error("404", 404), "s3://b/k"), NotFound)
