"""The [metrics] table: off by default, loopback unless allowed, a textfile node_exporter reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedfs.config import Config, load
from fedfs.errors import ConfigError
from tests.unit.test_config import GOOD as BASE


def load_with(tmp_path: Path, metrics: str) -> Config:
    p = tmp_path / "climate.toml"
    p.write_text(f"[metrics]\n{metrics}\n{BASE}" if metrics else BASE)
    return load(p)


def test_metrics_are_off_by_default(tmp_path: Path) -> None:
    cfg = load_with(tmp_path, "")
    assert cfg.metrics.listen is None and cfg.metrics.textfile is None


def test_loopback_listen_and_textfile(tmp_path: Path) -> None:
    cfg = load_with(
        tmp_path,
        'listen = "127.0.0.1:9468"\ntextfile = "/var/lib/node_exporter/textfile/fedfs.prom"\n'
        "interval = 30",
    ).metrics
    assert cfg.listen == ("127.0.0.1", 9468)
    assert cfg.textfile == Path("/var/lib/node_exporter/textfile/fedfs.prom")
    assert cfg.interval == 30.0
    assert load_with(tmp_path, 'listen = "[::1]:9468"').metrics.listen == ("::1", 9468)


@pytest.mark.parametrize(
    ("metrics", "expected"),
    [
        ('listen = "0.0.0.0:9468"', "not a loopback address"),
        ('listen = "metrics.example.org:9468"', "allow_remote = true"),
        ('listen = "127.0.0.1"', "is not HOST:PORT"),
        ('listen = "127.0.0.1:99999"', "is not HOST:PORT"),
        ('textfile = "fedfs.prom"', "absolute path ending in .prom"),
        ('textfile = "/var/lib/node_exporter/fedfs.txt"', "reads only *.prom"),
        ("interval = 0", "[metrics] interval: must be greater than 0"),
        ('listn = "127.0.0.1:9468"', "[metrics] listn: unknown key"),
    ],
)
def test_metrics_mistakes_name_the_key_and_the_fix(
    tmp_path: Path, metrics: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as e:
        load_with(tmp_path, metrics)
    assert expected in str(e.value) and str(tmp_path / "climate.toml") in str(e.value)


def test_a_remote_listen_address_needs_allow_remote(tmp_path: Path) -> None:
    cfg = load_with(tmp_path, 'listen = "0.0.0.0:9468"\nallow_remote = true').metrics
    assert cfg.listen == ("0.0.0.0", 9468) and cfg.allow_remote
