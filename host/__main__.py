"""``python -m host batch ...`` / ``python -m host session``: see host/cli/main.py."""

import sys

from host.cli.main import main

sys.exit(main())
