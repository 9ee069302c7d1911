"""`python -m fedfs.cli.manpages DIR`: write fedfs(1) and fedfs-COMMAND(1) into DIR/man1.

The pages are made from the command's own parser, so they never drift from --help.
Needs none of fedfs's third-party dependencies (the RPM build runs it bare).
"""

import sys

from fedfs.cli.main import parser
from fedfs.ops import manual

if __name__ == "__main__":
    sys.exit(manual.main(sys.argv[1:], parser()))
