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

from fedfs.store.lean import Credentials, HttpError, LeanClient, _listed, _query


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


def test_the_query_string_is_canonical_and_signed() -> None:
    """What is sent is SigV4's canonical query: sorted, every reserved byte encoded."""
    assert _query({"prefix": "a dir/ü+", "list-type": "2", "delimiter": "/"}) == (
        "delimiter=%2F&list-type=2&prefix=a%20dir%2F%C3%BC%2B"
    )
    client = LeanClient("http://127.0.0.1:7480", "us-east-1", lambda: Credentials("a", "b"))
    when = datetime.datetime(2026, 12, 5, tzinfo=datetime.UTC)
    plain = client._sign("GET", "h", "/b", {}, when)
    listed = client._sign("GET", "h", "/b", {}, when, query="list-type=2&prefix=x")
    assert plain["authorization"] != listed["authorization"]
    assert client._where("b", "") == ("127.0.0.1:7480", "/b")


def test_a_listing_page_is_read_with_its_keys_decoded() -> None:
    body = (
        b'<?xml version="1.0" encoding="UTF-8"?>'
        b'<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        b"<Name>b</Name><Prefix>d%2F</Prefix><KeyCount>3</KeyCount><MaxKeys>2</MaxKeys>"
        b"<Delimiter>%2F</Delimiter><IsTruncated>true</IsTruncated>"
        b"<NextContinuationToken>tok/en+=</NextContinuationToken>"
        b"<EncodingType>url</EncodingType>"
        b"<Contents><Key>d/a+b%2Bc%01</Key><LastModified>2026-12-05T05:02:56.400Z</LastModified>"
        b"<ETag>&quot;abc&quot;</ETag><Size>100</Size><StorageClass>STANDARD</StorageClass>"
        b"</Contents>"
        b"<CommonPrefixes><Prefix>d/sub%20dir/</Prefix></CommonPrefixes>"
        b"</ListBucketResult>"
    )
    page = _listed(body)
    assert page.objects == [("d/a b+c\x01", 100, "abc", 1796446976.4)]
    assert page.prefixes == ["d/sub dir/"]
    assert page.next_token == "tok/en+="
    last = _listed(body.replace(b"<IsTruncated>true", b"<IsTruncated>false"))
    assert last.next_token is None
    raw = _listed(body.replace(b"<EncodingType>url</EncodingType>", b""))
    assert raw.objects[0][0] == "d/a+b%2Bc%01"  # not encoded: taken as it is
