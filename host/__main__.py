"""``python -m host batch ...`` / ``python -m host session``: see host/cli/main.py."""

import sys

from .cli.main import main

sys.exit(main())
