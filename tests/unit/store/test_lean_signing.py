"""fedfs's own request signing (fedfs/store/lean.py) against AWS's published SigV4 example,
and how a CopyObject answer is read (a local HTTP server plays the store).

The example is "GET Object" with a Range header from the S3 API reference
(Signature Version 4, header-based authentication, example 1). RGW checks
real signatures in tests/integration/cache/test_lean_requests_rgw.py.
"""

from __future__ import annotations

import datetime
import http.server
import threading

from fedfs.store.lean import Credentials, HttpError, LeanClient


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


def test_a_copy_answered_200_with_an_error_is_retried_then_reported() -> None:
    """S3 may answer a CopyObject 200 and put the error in the body (once the copy began)."""
    answers = [
        b"<Error><Code>InternalError</Code><Message>try again</Message></Error>",
        b'<CopyObjectResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        b'<LastModified>2026-12-05T03:00:00.000Z</LastModified><ETag>"abc"</ETag>'
        b"</CopyObjectResult>",
        b"<Error><Code>AccessDenied</Code><Message>no</Message></Error>",
    ]
    seen: list[dict[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            seen.append({k.lower(): v for k, v in self.headers.items()})
            body = answers.pop(0)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = LeanClient(
            f"http://127.0.0.1:{server.server_port}", "us-east-1", lambda: Credentials("a", "b")
        )
        etag, when = client.copy("b", "dir/a b", "dir/c", {"x-amz-metadata-directive": "COPY"})
        assert (etag, when) == (
            "abc",
            datetime.datetime(2026, 12, 5, 3, tzinfo=datetime.UTC).timestamp(),
        )
        assert seen[0]["x-amz-copy-source"] == "b/dir/a%20b"
        assert seen[0]["content-length"] == "0"
        assert len(seen) == 2  # the InternalError was tried again
        try:
            client.copy("b", "x", "y", {})
        except HttpError as e:
            assert (e.status, e.code) == (200, "AccessDenied")
        else:
            raise AssertionError("an error in a 200 answer was taken for a copy")
    finally:
        server.shutdown()
