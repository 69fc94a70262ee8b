"""``python -m recfunnel``: the command line (what ``torchrun -m recfunnel`` starts)."""

import sys

from recfunnel.cli import main

sys.exit(main())
