"""WALS fits under torchrun; each rank writes its factors (run by test_distributed)."""

import sys

import torch
from safetensors.torch import save_file

from recfunnel import distributed

sys.path.insert(0, sys.argv[2])  # the tests folder, for cases.py
from cases import WALS_CASES, wals_fit  # noqa: E402

distributed.init("cpu")
torch.set_num_threads(1)
out = {}
for name in WALS_CASES:
    model = wals_fit(name)
    for key, value in model._learned_tensors().items():
        out[f"{name}/{key}"] = value.contiguous()
    out[f"{name}/loss"] = torch.tensor([e["loss"] for e in model.training_log_.epochs])
save_file(out, f"{sys.argv[1]}.rank{distributed.rank()}")
distributed.shutdown()
