"""`python -m fedfs.cli` runs the `fedfs` command."""

import sys

from fedfs.cli.main import main

sys.exit(main())
