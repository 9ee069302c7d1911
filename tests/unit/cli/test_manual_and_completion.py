"""Man pages made from `fedfs --help`, and shell completion, as a person would use them."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fedfs.cli.main import parser
from fedfs.ops import manual as manpage

REPO = Path(__file__).resolve().parents[3]


def commands() -> list[tuple[str, argparse.ArgumentParser]]:
    return [(name, sub) for name, sub, _ in manpage.subcommands(parser())]


def render(page: Path) -> str:
    """The page as plain text, formatted the way `man` does; groff warnings fail the test."""
    r = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", "-P-cbou", "-rLL=100n", str(page)],
        capture_output=True,
        text=True,
        env={**os.environ, "LC_ALL": "C.UTF-8"},
    )
    assert r.returncode == 0 and r.stderr == "", r.stderr
    return r.stdout


@pytest.fixture(scope="module")
def man1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("man")
    r = subprocess.run(
        ["bash", str(REPO / "scripts/manpages"), str(out)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    return out / "man1"


def test_one_page_per_command(man1: Path) -> None:
    expected = {"fedfs.1"} | {f"fedfs-{name}.1" for name, _ in commands()}
    assert {p.name for p in man1.iterdir()} == expected
    assert {"fedfs-mount.1", "fedfs-share.1", "fedfs-audit.1"} <= expected


def test_pages_say_what_help_says(man1: Path) -> None:
    """Every option and nested command of every command's --help, in its page."""
    for name, sub in commands():
        text = " ".join(render(man1 / f"fedfs-{name}.1").split())
        assert f"fedfs {name}" in text
        if sub.description:
            assert " ".join(sub.description.split()) in text, name
        for action in sub._actions:
            for option in action.option_strings:
                assert option in text, (name, option)
        for nested, nested_parser, _ in manpage.subcommands(sub):
            assert f"fedfs {name} {nested}" in text
            for action in nested_parser._actions:
                for option in action.option_strings:
                    assert option in text, (name, nested, option)


def test_main_page_lists_commands_and_files(man1: Path) -> None:
    text = render(man1 / "fedfs.1")
    for name, _ in commands():
        assert f"fedfs-{name}(1)" in text
    assert "/usr/share/fedfs/policy/default.toml" in text
    assert "/etc/fedfs/policy.d/*.toml" in text


def test_text_that_looks_like_roff_stays_text() -> None:
    assert manpage.roff(".TH not a request\n'neither\nback\\slash -x") == (
        "\\&.TH not a request\n\\&'neither\nback\\eslash \\-x"
    )


def completions(line: str, script: str) -> list[str]:
    """What bash offers for TAB at the end of `line`, with fedfs's completion loaded."""
    words = line.split(" ")
    program = f"""
source /dev/stdin <<'COMPLETION'
{script}
COMPLETION
COMP_WORDS=({" ".join(f"'{w}'" for w in words)})
COMP_CWORD={len(words) - 1}
COMP_LINE='{line}'
COMP_POINT={len(line)}
$(complete -p fedfs | sed 's/.*-F \\([^ ]*\\) .*/\\1/') fedfs '{words[-1]}' '{words[-2]}'
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    r = subprocess.run(["bash", "-c", program], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return sorted(x for x in r.stdout.splitlines() if x)


@pytest.fixture(scope="module")
def bash_script() -> str:
    assert shutil.which("bash")
    r = subprocess.run(
        [sys.executable, "-m", "fedfs.cli", "completion", "bash"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_bash_completes_commands_actions_and_choices(bash_script: str) -> None:
    assert completions("fedfs mo", bash_script) == ["mount"]
    assert completions("fedfs un", bash_script) == ["unshare"]
    assert completions("fedfs team a", bash_script) == ["add"]
    assert completions("fedfs audit ", bash_script) == sorted(
        ["verify", "who", "user", "expiring", "orphans", "log"]
    )
    assert completions("fedfs share /mnt/x --le", bash_script) == ["--level"]
    assert completions("fedfs share /mnt/x --level ", bash_script) == ["manage", "read", "write"]
    assert completions("fedfs completion ", bash_script) == ["bash", "tcsh", "zsh"]


def test_zsh_and_tcsh_scripts_too() -> None:
    for shell, start in (("zsh", "#compdef fedfs"), ("tcsh", "# AUTOMATICALLY GENERATED")):
        r = subprocess.run(
            [sys.executable, "-m", "fedfs.cli", "completion", shell],
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        assert r.returncode == 0 and r.stdout.startswith(start), (shell, r.stdout[:200])
