"""Per-epoch checkpoints of a fit, and resuming from the last one (``--checkpoint-every``,
``--resume``).

A checkpoint holds everything the next epoch depends on, so a resumed fit ends exactly where
an uninterrupted one with the same seed does: the network's state, the optimiser's state, the
random generators (torch's global one, the trainer's shuffling one and any the network owns,
e.g. a negative sampler), the epoch reached, the per-epoch history and the early-stopping state.
Tensors go into safetensors, everything else into JSON; never pickle.

Layout of a checkpoint folder (one sub-folder per ``Trainer.fit`` call of the run, as a
two-stage model fits twice)::

    DIR/fit-1/latest.json             {"epoch": 3, "folder": "epoch-0003"}
    DIR/fit-1/epoch-0003/state.safetensors
    DIR/fit-1/epoch-0003/state.json

Writing is atomic: each file of an epoch folder is written under a temporary name and renamed
(:mod:`recfunnel.artifacts`), then ``latest.json`` is replaced the same way to point at it, then
older epochs are removed, so a kill at any moment leaves the previous checkpoint or the new one,
never half of one.

The trainer finds the policy through :func:`checkpointing`, a context the command line (or any
caller) opens around training, so no model's ``fit`` signature has to carry it.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from recfunnel.artifacts import atomic_file, atomic_path
from recfunnel.errors import RecfunnelError

FORMAT = 1


@dataclass
class CheckpointPolicy:
    """Where and how often to checkpoint.

    Attributes:
        directory: the run's checkpoint folder.
        every: write a checkpoint every this many epochs (and after the last one).
        resume: continue from the latest checkpoint found in ``directory``.
        write: whether this process writes (rank 0 of a distributed job); every rank reads.
    """

    directory: Path
    every: int = 1
    resume: bool = False
    write: bool = True
    fits: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)
        if self.every < 1:
            raise RecfunnelError(
                f"every must be at least 1, not {self.every}",
                cli=f"--checkpoint-every must be at least 1, not {self.every}",
            )


_POLICY: contextvars.ContextVar[CheckpointPolicy | None] = contextvars.ContextVar(
    "recfunnel_checkpoint_policy", default=None
)


@contextlib.contextmanager
def checkpointing(directory, *, every: int = 1, resume: bool = False, write: bool = True):
    """Checkpoint every fit run inside the ``with`` block (see the module docstring)."""
    token = _POLICY.set(CheckpointPolicy(Path(directory), every, resume, write))
    try:
        yield _POLICY.get()
    finally:
        _POLICY.reset(token)


def current() -> Checkpointer | None:
    """The checkpointer of the next fit, or ``None`` outside :func:`checkpointing`."""
    policy = _POLICY.get()
    if policy is None:
        return None
    policy.fits += 1
    return Checkpointer(policy, policy.directory / f"fit-{policy.fits}")


def _generators(model) -> dict[str, torch.Generator]:
    """Generators a network owns (attributes of its modules), by dotted name."""
    found = {}
    modules = model.named_modules() if hasattr(model, "named_modules") else [("", model)]
    for prefix, module in modules:
        for name, value in vars(module).items():
            if isinstance(value, torch.Generator):
                found[f"{prefix}.{name}" if prefix else name] = value
    return found


def _split_optimizer(states: list[dict]) -> tuple[dict, dict]:
    """Optimiser state dicts -> (tensors, JSON-able structure)."""
    tensors, shape = {}, []
    for i, state in enumerate(states):
        entries = {}
        for pid, values in state["state"].items():
            entry = {}
            for key, value in values.items():
                if isinstance(value, torch.Tensor):
                    name = f"optimizer.{i}.{pid}.{key}"
                    tensors[name] = value.detach().cpu().contiguous().clone()
                    entry[key] = {"tensor": name}
                else:
                    entry[key] = {"value": value}
            entries[str(pid)] = entry
        shape.append({"state": entries, "param_groups": state["param_groups"]})
    return tensors, {"optimizer": shape}


def _join_optimizer(shape: list[dict], tensors: dict) -> list[dict]:
    states = []
    for part in shape:
        state = {}
        for pid, entry in part["state"].items():
            state[int(pid)] = {
                key: tensors[v["tensor"]] if "tensor" in v else v["value"]
                for key, v in entry.items()
            }
        states.append({"state": state, "param_groups": part["param_groups"]})
    return states


def _atomic_json(path: Path, data: dict) -> None:
    with atomic_file(path) as fh:
        json.dump(data, fh, default=lambda v: v.item() if hasattr(v, "item") else str(v))


class Checkpointer:
    """Saves and loads the checkpoints of one fit (see the module docstring)."""

    def __init__(self, policy: CheckpointPolicy, folder: Path) -> None:
        self.policy = policy
        self.folder = folder

    def due(self, epoch: int, last: bool) -> bool:
        """Whether to write after ``epoch`` (1-based); in a distributed job only rank 0 does."""
        from recfunnel import distributed

        if not self.policy.write or distributed.rank() != 0:
            return False
        return last or epoch % self.policy.every == 0

    def save(self, epoch: int, *, model, optimizer, generator, fingerprint: dict,
             trainer_state: dict, best_state: dict | None) -> None:  # fmt: skip
        """Write the state after ``epoch`` (1-based) completed epochs."""
        tensors: dict[str, torch.Tensor] = {}
        for name, value in model.state_dict().items():
            if isinstance(value, torch.Tensor):
                tensors[f"model.{name}"] = value.detach().cpu().contiguous().clone()
        for name, value in (best_state or {}).items():
            if isinstance(value, torch.Tensor):
                tensors[f"best.{name}"] = value.detach().cpu().contiguous().clone()
        optimizer_json = {"optimizer": []}
        if optimizer is not None:
            optimizer_tensors, optimizer_json = _split_optimizer(optimizer.state_dict())
            tensors.update(optimizer_tensors)
        tensors["rng.torch"] = torch.get_rng_state()
        tensors["rng.shuffle"] = generator.get_state()
        for name, gen in _generators(model).items():
            tensors[f"rng.model.{name}"] = gen.get_state()
        meta = {
            "format": FORMAT,
            "epoch": epoch,
            "fingerprint": fingerprint,
            "trainer": trainer_state,
            "has_best": best_state is not None,
            **optimizer_json,
        }
        name = f"epoch-{epoch:04d}"
        folder = self.folder / name
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / "state.safetensors") as tmp:
            save_file(tensors, str(tmp))
        _atomic_json(folder / "state.json", meta)
        # the new epoch counts once latest.json points at it (a kill before leaves the old one)
        _atomic_json(self.folder / "latest.json", {"epoch": epoch, "folder": name})
        for old in self.folder.iterdir():  # earlier epochs and stale temporaries
            if old.is_dir() and old.name != name:
                shutil.rmtree(old, ignore_errors=True)

    def load(self, fingerprint: dict) -> dict | None:
        """The latest checkpoint (``None`` if there is none), checked against ``fingerprint``."""
        if not self.policy.resume:
            return None
        pointer = self.folder / "latest.json"
        if not pointer.is_file():
            return None
        try:
            latest = json.loads(pointer.read_text(encoding="utf-8"))
            folder = self.folder / str(latest["folder"])
            meta = json.loads((folder / "state.json").read_text(encoding="utf-8"))
            tensors = load_file(str(folder / "state.safetensors"))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            problem = f"cannot read the checkpoint in {self.folder} ({type(exc).__name__})"
            raise RecfunnelError(
                f"{problem}; delete it or fit without resume=True",
                cli=f"{problem}; delete it or train without --resume",
            ) from None
        if meta.get("format") != FORMAT or meta.get("fingerprint") != fingerprint:
            problem = f"the checkpoint in {self.folder} was written for other data or settings"
            raise RecfunnelError(
                f"{problem}; delete it or fit without resume=True",
                cli=f"{problem}; delete it or train without --resume",
            )
        meta["tensors"] = tensors
        return meta

    def restore(self, meta: dict, *, model, optimizer, generator) -> dict | None:
        """Load ``meta`` (from :meth:`load`) into the fit's objects; returns the best state."""
        tensors = meta["tensors"]
        state = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
        model.load_state_dict(state)
        if optimizer is not None:
            optimizer.load_state_dict(_join_optimizer(meta["optimizer"], tensors))
        torch.set_rng_state(tensors["rng.torch"])
        generator.set_state(tensors["rng.shuffle"])
        for name, gen in _generators(model).items():
            gen.set_state(tensors[f"rng.model.{name}"])
        if not meta["has_best"]:
            return None
        return {k.removeprefix("best."): v for k, v in tensors.items() if k.startswith("best.")}
