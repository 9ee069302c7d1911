"""The demo's config: everything it writes stays under its --state directory."""

from __future__ import annotations

from pathlib import Path

from fedfs import config
from fedfs.ops import demo


def test_the_demo_keeps_its_policy_state_under_its_state_directory(tmp_path: Path) -> None:
    """Two demos with their own --state must not share (and lock) one policy database."""
    text = demo.CONFIG.format(port=9000, key=demo.DEMO_KEY, state=tmp_path)
    (tmp_path / "demo.toml").write_text(text)
    cfg = config.load(tmp_path / "demo.toml")
    assert cfg.policy.state_dir == tmp_path / "state"
    assert cfg.cache.dir == tmp_path / "cache"
    # the socket stays where every user reaches it, one per demo port
    assert cfg.control.socket == Path("/run/fedfs/demo-9000.sock")
