"""One training step under torchrun; rank 0 writes its gradients (run by test_distributed)."""

import sys

import torch
from safetensors.torch import save_file

from recfunnel import distributed
from recfunnel.training import train_step

sys.path.insert(0, sys.argv[2])  # the tests folder, for cases.py
from cases import CASES, build  # noqa: E402

distributed.init("cpu")
torch.set_num_threads(1)
grads = {}
for name in CASES:
    net, tensors, rows = build(name)
    train_step(net, tensors, rows)
    for key, p in net.named_parameters():
        if p.grad is not None:  # BPR leaves the user biases out of its loss
            grads[f"{name}/{key}"] = p.grad.to_dense().contiguous()
if distributed.rank() == 0:
    save_file(grads, sys.argv[1])
distributed.shutdown()
