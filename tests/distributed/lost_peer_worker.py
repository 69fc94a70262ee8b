"""Run by torchrun (two ranks) from tests/test_distributed.py: rank 0 dies right after joining
the group; rank 1's next collective fails, and it writes what :func:`lost_peer` and
:func:`peer_error_message` make of that error."""

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from recfunnel import distributed

distributed.init("cpu")
if distributed.rank() == 0:
    os._exit(3)  # a crash: no clean-up, the sockets just close
try:
    dist.all_reduce(torch.ones(4))
except Exception as exc:  # noqa: BLE001 - what the CLI sees
    report = {
        "lost_peer": distributed.lost_peer(exc),
        "message": distributed.peer_error_message(exc),
        "plain": distributed.lost_peer(ValueError("not a collective")),
    }
else:
    report = {"lost_peer": None}
Path(sys.argv[1]).write_text(json.dumps(report))
sys.stdout.flush()
os._exit(0)
