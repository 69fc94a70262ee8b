"""Data-parallel training on :mod:`torch.distributed` (``torchrun`` or ``train --nproc N``).

    torchrun --standalone --nproc-per-node 2 -m recfunnel train --dataset movielens-100k ...
    recfunnel train --nproc 2 ...                  # the same: launches torch.distributed.run

    # two machines (run on each; rank 0's address as the rendezvous endpoint)
    torchrun --nnodes 2 --nproc-per-node 2 --rdzv-backend c10d \\
        --rdzv-endpoint HOST0:29400 --rdzv-id job1 -m recfunnel train ...

How a step works, with ``P`` processes and ``--batch-size B``:

* Every process holds the training data and draws the same seeded shuffle; a step takes the
  next ``P * B`` rows of it (the *global batch*) and process ``r`` trains on its own index range
  of them (:func:`split`). So ``P`` processes with batch ``B`` see the same batches as one
  process with batch ``P * B``.
* In-batch and mixed negatives are *global*: each process gathers the candidate embeddings of
  every process's rows through the differentiable
  :func:`torch.distributed.nn.functional.all_gather` (gradients flow back to the process that
  owns each row), with their item ids (accidental hits) and, through them, the counts the logQ
  correction needs (:func:`gather_candidates`).
* Each process scales its loss by its share of the global batch and the gradients are averaged
  with one all-reduce per parameter (sparse gradients stay sparse on gloo), so every process
  takes the same optimiser step the single process with batch ``P * B`` takes (tested to 1e-5).
* Rank 0 evaluates, writes checkpoints and saves the run; the others only train, then wait
  for it at a final barrier (:func:`shutdown`) so that all leave the group together.

The backend is gloo on the CPU and NCCL on CUDA, one GPU per process (``LOCAL_RANK``).
"""

from __future__ import annotations

import logging
import os
import sys
from datetime import timedelta

import torch
import torch.distributed as dist

_SIZES: list[int] | None = None  # the global batch's split, set by the trainer for each step
#: how long the other processes wait at the end for rank 0 to evaluate and save the run
FINISH_TIMEOUT = timedelta(hours=24)
_FINISH = None  # the process group of that final barrier (gloo), made by init()


def active() -> bool:
    """Whether this process is one of several in an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def launched() -> bool:
    """Whether torchrun (or ``--nproc``) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: str = "auto") -> None:
    """Join the process group torchrun describes: NCCL when CUDA is used, else gloo."""
    if not launched() or dist.is_initialized():
        return
    cuda = torch.cuda.is_available() and device != "cpu"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")
    global _FINISH
    # the final barrier's own group: waiting for rank 0's evaluation can take longer than a
    # training collective should ever wait
    _FINISH = dist.new_group(backend="gloo", timeout=FINISH_TIMEOUT)


def shutdown() -> None:
    """Leave the process group, all processes together: rank 0 evaluates and saves alone
    while the others wait for it here, since a process that exits while its peers still hold
    gloo connections to it can abort ("terminate called without an active exception"), and
    torchrun then stops the whole job, rank 0's evaluation included."""
    global _FINISH
    if dist.is_available() and dist.is_initialized():
        if _FINISH is not None:
            dist.barrier(group=_FINISH)
        dist.destroy_process_group()
    _FINISH = None


def split(rows: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """This process's index range of a global batch ``rows`` and every process's size."""
    pieces = torch.tensor_split(rows, world_size())
    return pieces[rank()], [len(p) for p in pieces]


def set_step_sizes(sizes: list[int] | None) -> None:
    global _SIZES
    _SIZES = sizes


def global_batch(local: int) -> tuple[int, int]:
    """``(rows, offset)``: the size of this step's global batch and where this process's
    ``local`` rows start in it; outside a distributed step ``(local, 0)``. A model that draws
    random numbers per row (BPR's negatives) draws for the global batch and keeps its slice, so
    ``P`` processes draw what one process with the global batch draws."""
    if not active() or _SIZES is None:
        return local, 0
    return sum(_SIZES), sum(_SIZES[: rank()])


def gather_candidates(vectors: torch.Tensor, ids: torch.Tensor):
    """``(vectors [G, D], ids [G], offset)``: every process's candidates of this step, in rank
    order, gathered so gradients flow back to their owners, and where this process's own rows
    start among them. Outside a distributed step: the inputs and offset 0."""
    if not active() or _SIZES is None:
        return vectors, ids, 0
    from torch.distributed.nn.functional import all_gather

    longest = max(_SIZES)
    pad = longest - len(ids)
    if pad:
        vectors = torch.cat([vectors, vectors.new_zeros(pad, vectors.shape[1])])
        ids = torch.cat([ids, ids.new_zeros(pad)])
    gathered = all_gather(vectors)
    id_parts = [torch.empty_like(ids) for _ in _SIZES]
    dist.all_gather(id_parts, ids)
    vectors = torch.cat([part[:size] for part, size in zip(gathered, _SIZES, strict=True)])
    ids = torch.cat([part[:size] for part, size in zip(id_parts, _SIZES, strict=True)])
    return vectors, ids, sum(_SIZES[: rank()])


def loss_scale(local: int, sizes: list[int], reduction: str) -> float:
    """Factor on a process's loss so that averaged gradients equal the single-process ones:
    a mean over its ``local`` rows weighs ``local / total`` of the global mean; a sum adds."""
    if reduction == "sum":
        return float(len(sizes))
    return local * len(sizes) / sum(sizes)


def average_gradients(parameters) -> None:
    """All-reduce and average the gradients of ``parameters`` over the processes."""
    world = world_size()
    for p in parameters:
        if p.grad is None:
            continue
        grad = p.grad
        if grad.is_sparse:  # NCCL has no sparse all-reduce; gloo does
            grad = grad.to_dense() if grad.device.type == "cuda" else grad.coalesce()
        dist.all_reduce(grad)
        grad /= world
        p.grad = grad


def broadcast_parameters(model: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers to every process (they start equal when seeded alike;
    this makes it so whatever the initialiser)."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.is_sparse or tensor.layout != torch.strided:
            continue
        dist.broadcast(tensor.data, 0)


#: what gloo's and NCCL's errors say when a peer is gone or silent (their plain RuntimeErrors)
_PEER_WORDS = ("peer", "connection", "broken pipe", "timed out", "timeout")


def lost_peer(exc: BaseException) -> bool:
    """Whether ``exc`` came out of a collective of a multi-process job because a peer exited,
    crashed or stopped answering: a :class:`torch.distributed.DistError`, or gloo's plain
    ``RuntimeError`` raised inside :mod:`torch.distributed` that says so ("Connection closed by
    peer", "Timed out"). Other errors there (a bug: mismatched shapes) keep their traceback."""
    if not launched():
        return False
    if isinstance(exc, dist.DistError):
        return True
    if not isinstance(exc, RuntimeError) or exc.__traceback__ is None:
        return False
    tb = exc.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    inside = str(tb.tb_frame.f_globals.get("__name__", "")).startswith("torch.distributed")
    return inside and any(word in str(exc).lower() for word in _PEER_WORDS)


def peer_error_message(exc: BaseException) -> str:
    """The one line a process prints when :func:`lost_peer`: which process it is, what the
    collective said (its first line), and where the cause is."""
    said = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if said.startswith("[") and "] " in said:  # gloo's "[/path/to/pair.cc:553] Connection ..."
        said = said.split("] ", 1)[1]
    said = said.split(". ")[0].rstrip(".")
    who = f"process {os.environ.get('RANK', '?')} of {os.environ.get('WORLD_SIZE', '?')}"
    return (f"{who} stopped: the other training processes stopped answering ({said}); one of "
            "them failed or was stopped: its error is the first one above")  # fmt: skip


def launch(argv: list[str], nproc: int) -> int:
    """Run ``recfunnel ARGV`` in ``nproc`` processes on this machine (``--nproc``).

    The processes print their own errors; the launcher's log lines ("Sending process ...
    closing signal") are silenced and its failure report becomes one line naming the first
    process that failed and how."""
    from torch.distributed import run
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    for name in list(logging.Logger.manager.loggerDict):
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    args = ["--standalone", "--nproc-per-node", str(nproc), "-m", "recfunnel", *argv]
    try:
        run.main(args)
    except SystemExit as exc:  # torchrun exits with the failing worker's status
        return int(exc.code or 0)
    except ChildFailedError as exc:  # the workers' errors are already on stderr
        rank, failure = exc.get_first_failure()
        how = (f"was stopped by {failure.signal_name()}" if failure.exitcode < 0
               else f"exited with status {failure.exitcode}")  # fmt: skip
        print(f"error: training process {rank} of {nproc} {how}; its error is above",
              file=sys.stderr, flush=True)  # fmt: skip
        return failure.exitcode if failure.exitcode > 0 else 1
    except Exception as exc:  # the launcher's own (a rendezvous store lost as workers failed)
        said = (str(exc).strip().splitlines() or [""])[0]
        print(f"error: the training processes stopped ({type(exc).__name__}: {said}); their "
              "errors, if any, are above", file=sys.stderr, flush=True)  # fmt: skip
        return 1
    return 0
