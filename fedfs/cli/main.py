"""The `fedfs` command: its --help is the manual.

This module assembles the parser from the modules that own each audience's
subcommands (mounting, scientists, jobs, audit, admins: each defines its
arguments next to its `cmd_*` functions) and dispatches. Each subcommand
parses its arguments, calls one module, and prints a result or one line of
error for people (exit status 1); tracebacks are for bugs only. Building the
parser needs only the standard library, so man pages can be made from it
(`fedfs.ops.manual`) on a build host without fedfs's dependencies.
"""

from __future__ import annotations

import argparse
import sys

from fedfs import __version__
from fedfs.cli import admins, audit, jobs, mounting, scientists
from fedfs.cli.common import denied
from fedfs.errors import FedfsError
from fedfs.events import printable

EPILOG = """\
Configuration: a TOML file with [store] (endpoint, region, access_key, secret_key),
[cache] (dir, size) and one [[buckets]] table per bucket (name, owner).
See README.md and docs/SEMANTICS.md."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fedfs",
        description="Team-controlled S3 buckets as POSIX trees, with kernel-enforced share grants.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"fedfs {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    mounting.add_parsers(sub)
    scientists.add_parsers(sub)
    jobs.add_parsers(sub)
    audit.add_parsers(sub)
    admins.add_parsers(sub, root=p)
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if not getattr(args, "func", None):
        p.print_help()
        return 2
    try:
        return int(args.func(args))
    except FedfsError as e:
        print(f"fedfs: {printable(e)}", file=sys.stderr)
        return 1
    except PermissionError as e:  # a file or directory only root (or a group) may use
        print(f"fedfs: {denied(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
