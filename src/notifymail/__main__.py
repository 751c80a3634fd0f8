"""``python -m notifymail``: the command line tool."""

import sys

from notifymail.cli import main

sys.exit(main())
