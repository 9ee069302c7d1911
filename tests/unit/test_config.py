"""The config file: valid files load; every mistake names file, key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedfs.config import load, parse_size
from fedfs.errors import ConfigError

GOOD = """
[store]
endpoint = "http://127.0.0.1:9000"
region = "us-east-1"
access_key = "k"
secret_key = "s"

[cache]
dir = "/var/cache/fedfs"
size = "200GiB"

[[buckets]]
name = "climate"
owner = "user:alice"
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "fedfs.toml"
    p.write_text(text)
    return p


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as e:
        load(write(tmp_path, text))
    return str(e.value)


def test_good_config_loads(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, GOOD))
    assert cfg.store.endpoint == "http://127.0.0.1:9000"
    assert cfg.cache.size == 200 * 1024**3
    assert cfg.cache.block_size == 8 * 1024**2
    assert [(b.name, b.owner) for b in cfg.buckets] == [("climate", "user:alice")]
    assert cfg.fs.attr_timeout == 1.0


def test_endpoint_and_keys_may_be_omitted(tmp_path: Path) -> None:
    text = GOOD.replace('endpoint = "http://127.0.0.1:9000"\n', "")
    text = text.replace('access_key = "k"\n', "").replace('secret_key = "s"\n', "")
    cfg = load(write(tmp_path, text))
    assert cfg.store.endpoint is None and cfg.store.access_key is None


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("[cache]", "[cachex]"),
            "[top level] cache: is required (is 'cachex' a misspelling of it?)",
        ),
        (('size = "200GiB"', ""), "[cache] size: is required"),
        (('size = "200GiB"', 'size = "lots"'), "[cache] size: 'lots' is not a size"),
        (('size = "200GiB"', 'size = "1MiB"'), "[cache] size: must hold at least 4 blocks"),
        (
            ('dir = "/var/cache/fedfs"', 'dir = "relative"'),
            "[cache] dir: 'relative' must be an absolute path",
        ),
        (
            ('region = "us-east-1"', 'regio = "us-east-1"'),
            "[store] regio: unknown key (did you mean 'region'?); valid keys here are",
        ),
        (
            ('endpoint = "http://127.0.0.1:9000"', 'endpoint = "127.0.0.1:9000"'),
            "is not an http(s) URL",
        ),
        (
            ('endpoint = "http://127.0.0.1:9000"', "endpoint = 9000"),
            "[store] endpoint: expected str, got 9000",
        ),
        (('secret_key = "s"', ""), "set both access_key and secret_key"),
        (('name = "climate"', 'name = "Climate_Data"'), "is not a valid S3 bucket name"),
        (('owner = "user:alice"', 'owner = "alice"'), "use user:NAME, group:NAME or team:NAME"),
        (('owner = "user:alice"', ""), "[buckets #1] owner: is required"),
        (("[[buckets]]", "[[bucket]]"), "(is 'bucket' a misspelling of it?)"),
        (
            ("[store]", "[store]\nconnect_timeout = -1"),
            "[store] connect_timeout: must be greater than 0",
        ),
        (("[store]", '[store]\nmultipart_chunksize = "1MiB"'), "S3 needs parts of at least 5MiB"),
        (
            ("[cache]", "[fs]\nattr_timeout = 99999\n[cache]"),
            "[fs] attr_timeout: must be between 0 and 3600",
        ),
        (("[cache]", '[fs]\nallow_other = "yes"\n[cache]'), "[fs] allow_other: expected bool"),
        (
            ("[cache]", "[cache]\nflush_busy_max = -1"),
            "[cache] flush_busy_max: must be between 0 and 3600",
        ),
        (
            ("[cache]", "[policy]\npoll_interval = 5\nlookback = 10\nlist_interval = 2\n[cache]"),
            "[policy] list_interval: must be at least poll_interval",
        ),
    ],
)
def test_each_mistake_names_the_key_and_the_fix(
    tmp_path: Path, change: tuple[str, str], expected: str
) -> None:
    text = GOOD.replace(*change, 1)
    assert text != GOOD
    message = error_of(tmp_path, text)
    assert message.startswith(str(tmp_path / "fedfs.toml") + ": ")
    assert expected in message


def test_duplicate_bucket_and_no_bucket(tmp_path: Path) -> None:
    twice = GOOD + '\n[[buckets]]\nname = "climate"\nowner = "user:bob"\n'
    assert "bucket 'climate' is listed twice" in error_of(tmp_path, twice)
    none = GOOD.split("[[buckets]]")[0]
    assert "add at least one [[buckets]] table" in error_of(tmp_path, none)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load(tmp_path / "missing.toml")
    assert "not valid TOML" in error_of(tmp_path, "[store\n")
    p = tmp_path / "bin.toml"
    p.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load(p)


def test_sizes() -> None:
    assert parse_size("8MiB") == 8 * 1024**2
    assert parse_size("1.5 GB") == 1_500_000_000
    assert parse_size(4096) == 4096
    for bad in ("", "MiB", "-1GiB", "1 parsec", True):
        with pytest.raises(ValueError):
            parse_size(bad)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_gives_config_error_or_config(
    tmp_path_factory: pytest.TempPathFactory, text: str
) -> None:
    p = tmp_path_factory.mktemp("cfg") / "x.toml"
    p.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        load(p)
    except ConfigError as e:
        assert str(e).startswith(str(p))


_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20))
_keys = st.sampled_from(
    [
        "store",
        "cache",
        "buckets",
        "fs",
        "endpoint",
        "dir",
        "size",
        "name",
        "owner",
        "region",
        "block_size",
        "access_key",
        "secret_key",
        "attr_timeout",
        "x",
    ]
)
_values = st.recursive(
    _scalars.filter(lambda v: v is not None),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_keys, inner, max_size=4)),
    max_leaves=12,
)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(_keys, _values, max_size=5))
def test_arbitrary_structures_give_config_error_or_config(raw: dict) -> None:
    from fedfs.config import parse

    try:
        parse(raw, Path("/etc/fedfs/x.toml"))
    except ConfigError as e:
        assert str(e).startswith("/etc/fedfs/x.toml: ")


def test_a_misspelt_key_is_named_before_the_keys_it_pairs_with(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("access_key", "acces_key"))
    with pytest.raises(ConfigError) as e:
        load(path)
    assert str(e.value) == (
        f"{path}: [store] acces_key: unknown key (did you mean 'access_key'?); "
        "valid keys here are: access_key, addressing_style, connect_timeout, copy_parts, "
        "endpoint, lean, max_attempts, max_connections, multipart_chunksize, multipart_threshold, "
        "read_timeout, region, secret_key"
    )


def test_the_bucket_policy_budget_defaults_to_512_kib_and_takes_a_size(tmp_path: Path) -> None:
    oa = '[object_acl]\nprincipal = "arn:aws:iam:::user/{user}"\n'
    assert load(write(tmp_path, GOOD + oa)).object_acl.max_policy_bytes == 512 * 1024
    aws = load(write(tmp_path, GOOD + oa + "max_policy_bytes = 20000\n"))
    assert aws.object_acl.max_policy_bytes == 20000
    assert (
        load(write(tmp_path, GOOD + oa + 'max_policy_bytes = "1MiB"\n')).object_acl.max_policy_bytes
        == 1 << 20
    )
    error = error_of(tmp_path, GOOD + oa + "max_policy_bytes = 100\n")
    assert "[object_acl] max_policy_bytes: 100 bytes holds hardly a statement" in error
