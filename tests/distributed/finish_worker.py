"""Run by torchrun (two ranks) from tests/test_distributed.py: rank 0 works on alone (as it
evaluates and saves a run), the other leaves at once; each writes when its shutdown returned."""

import sys
import time
from pathlib import Path

from recfunnel import distributed

distributed.init("cpu")
if distributed.rank() == 0:
    time.sleep(2.0)
rank = distributed.rank()
distributed.shutdown()
Path(f"{sys.argv[1]}.rank{rank}").write_text(repr(time.time()))
