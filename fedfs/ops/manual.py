"""Manual pages made from the `fedfs` argument parser: fedfs(1) and fedfs-COMMAND(1).

The CLI's parser is the one source, handed in by the caller: each page is a
command's --help (description, usage, arguments, options) in roff, and the
actions of `team` and `audit` are sections of their command's page. Standard
library only, so a package build can run `python3 -m fedfs.cli.manpages DIR`
(writes DIR/man1/*.1) without fedfs's deps.
"""

from __future__ import annotations

import argparse
import datetime
import os
from collections.abc import Iterator
from pathlib import Path

from fedfs import __version__

FILES = [
    ("/etc/fedfs/NAME.toml", "the config of mount NAME (systemd unit fedfs@NAME)"),
    ("/etc/fedfs/NAME.env", "MOUNTPOINT=... for fedfs@NAME (default /mnt/fedfs/NAME)"),
    ("/etc/fedfs/policy.d/*.toml", "site policy overrides, applied in name order"),
    ("/usr/share/fedfs/policy/default.toml", "the shipped site policy: every key, its default"),
    ("/run/fedfs/NAME.sock", "the control socket of mount NAME"),
    ("/var/lib/fedfs/NAME", "policy database, node signing key and audit chain of NAME"),
    ("/var/log/fedfs", "logs of daemonized mounts"),
]


def roff(text: str) -> str:
    """Text as roff: backslashes and hyphens escaped, no line read as a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line[:1] in (".", "'") else line for line in text.split("\n"))


def prose(text: str) -> str:
    return roff(" ".join(text.split()))


def subcommands(
    parser: argparse.ArgumentParser,
) -> Iterator[tuple[str, argparse.ArgumentParser, str]]:
    """(name, parser, one-line help) of each subcommand, in --help order."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, sub, helps.get(name, "")


def synopsis(parser: argparse.ArgumentParser) -> str:
    """The usage line in roff, the command in bold."""
    usage = " ".join(parser.format_usage().split()).removeprefix("usage: ")
    return f"\\fB{roff(parser.prog)}\\fR {prose(usage.removeprefix(parser.prog))}"


def arguments(parser: argparse.ArgumentParser) -> list[str]:
    """.TP entries for positionals, then options, as --help lists them."""
    fmt = parser._get_formatter()
    positionals, options = [], []
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
            continue
        helptext = prose(fmt._expand_help(action)) if action.help else ""
        if action.option_strings:
            term = ", ".join(f"\\fB{roff(o)}\\fR" for o in action.option_strings)
            if action.nargs != 0:
                metavar = fmt._format_args(action, action.dest.upper())
                term += f" \\fI{roff(metavar)}\\fR"
            options += [".TP", term, helptext]
        else:
            metavar = fmt._format_args(action, action.dest)
            positionals += [".TP", f"\\fI{roff(metavar)}\\fR", helptext]
    out = []
    if positionals:
        out += [".SS Arguments", *positionals]
    if options:
        out += [".SS Options", *options]
    return out


def header(name: str, summary: str) -> list[str]:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    date = datetime.datetime.fromtimestamp(int(epoch), datetime.UTC) if epoch else None
    return [
        f'.TH {name.upper()} 1 "{date.strftime("%Y-%m-%d") if date else ""}" '
        f'"fedfs {__version__}" "fedfs manual"',
        ".ad l",
        ".nh",
        ".SH NAME",
        f"{roff(name)} \\- {prose(summary)}",
    ]


def command_page(name: str, parser: argparse.ArgumentParser, summary: str) -> str:
    lines = [
        *header(f"fedfs-{name}", summary),
        ".SH SYNOPSIS",
        synopsis(parser),
        ".SH DESCRIPTION",
        prose(parser.description or summary[:1].upper() + summary[1:] + "."),
        *arguments(parser),
    ]
    nested = list(subcommands(parser))
    if nested:
        lines.append(".SH COMMANDS")
        for sub_name, sub, sub_help in nested:
            lines += [
                f".SS {roff(f'fedfs {name} {sub_name}')}",
                prose(sub.description or sub_help),
                ".PP",
                synopsis(sub),
            ]
            lines += [line for line in arguments(sub) if not line.startswith(".SS")]
    if parser.epilog:
        lines += [".SH NOTES", prose(parser.epilog)]
    lines += [".SH SEE ALSO", "\\fBfedfs\\fR(1)"]
    return "\n".join(lines) + "\n"


def main_page(parser: argparse.ArgumentParser) -> str:
    lines = [
        *header("fedfs", parser.description or "fedfs"),
        ".SH SYNOPSIS",
        "\\fBfedfs\\fR [\\fB\\-\\-version\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]",
        ".SH DESCRIPTION",
        prose(parser.description or ""),
        "Each command is described in its own page, \\fBfedfs\\-\\fICOMMAND\\fR(1), "
        "and by \\fBfedfs \\fICOMMAND\\fB \\-\\-help\\fR.",
        *arguments(parser),
        ".SH COMMANDS",
    ]
    for name, _, helptext in subcommands(parser):
        lines += [".TP", f"\\fBfedfs\\-{roff(name)}\\fR(1)", prose(helptext)]
    if parser.epilog:
        lines += [".SH CONFIGURATION", prose(parser.epilog)]
    lines.append(".SH FILES")
    for path, what in FILES:
        lines += [".TP", f"\\fI{roff(path)}\\fR", prose(what)]
    see_also = [f"\\fBfedfs\\-{roff(name)}\\fR(1)" for name, _, _ in subcommands(parser)]
    lines += [".SH SEE ALSO", ",\n".join([*see_also, "\\fBsystemctl\\fR(1)"])]
    return "\n".join(lines) + "\n"


def pages(parser: argparse.ArgumentParser) -> dict[str, str]:
    """File name (fedfs.1, fedfs-mount.1, ...) -> page text, for the `fedfs` parser."""
    out = {"fedfs.1": main_page(parser)}
    for name, sub, helptext in subcommands(parser):
        out[f"fedfs-{name}.1"] = command_page(name, sub, helptext)
    return out


def write(directory: Path, parser: argparse.ArgumentParser) -> list[Path]:
    """Write every page into directory/man1; the paths written."""
    man1 = directory / "man1"
    man1.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in pages(parser).items():
        path = man1 / name
        path.write_text(text)
        written.append(path)
    return written


def main(argv: list[str], parser: argparse.ArgumentParser) -> int:
    args = argv or ["build/man"]
    written = write(Path(args[0]), parser)
    print(f"wrote {len(written)} pages to {Path(args[0]) / 'man1'}")
    return 0
