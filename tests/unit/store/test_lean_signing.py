"""fedfs's own request signing (fedfs/store/lean.py) against AWS's published SigV4 example.

The example is "GET Object" with a Range header from the S3 API reference
(Signature Version 4, header-based authentication, example 1). RGW checks
real signatures in tests/integration/cache/test_lean_requests_rgw.py.
"""

from __future__ import annotations

import datetime

from fedfs.store.lean import Credentials, LeanClient


def test_the_signature_of_awss_get_object_example() -> None:
    client = LeanClient(
        "https://s3.amazonaws.com",
        "us-east-1",
        lambda: Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
        addressing_style="virtual",
    )
    host, path = client._where("examplebucket", "test.txt")
    assert (host, path) == ("examplebucket.s3.amazonaws.com", "/test.txt")
    headers = client._sign(
        "GET",
        host,
        path,
        {"Range": "bytes=0-9"},
        datetime.datetime(2013, 5, 24, tzinfo=datetime.UTC),
    )
    assert headers["authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )


def test_keys_are_encoded_once_slashes_kept() -> None:
    client = LeanClient("http://127.0.0.1:7480/", "us-east-1", lambda: Credentials("a", "b"))
    assert client._where("b", "dir with space/ü+=&~x") == (
        "127.0.0.1:7480",
        "/b/dir%20with%20space/%C3%BC%2B%3D%26~x",
    )
