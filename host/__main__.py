"""``python -m host batch ...`` / ``python -m host session``: see host/cli.py."""

import sys

from .cli import main

sys.exit(main())
