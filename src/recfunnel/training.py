"""The one trainer: optimiser, batching, device, progress, per-epoch metrics, early stopping.

Models state *what* to optimise; the trainer owns *how*. A gradient-trained network exposes
``compute_loss(batch) -> scalar tensor`` where ``batch`` maps ``"user"``, ``"item"`` and, when
present, ``"rating"``, ``"weight"`` and ``"timestamp"`` to [B] tensors (rows of the training
interactions; a model whose rows are something else, e.g. the item autoencoder's items, passes
its own dict of columns instead). A model with a
closed-form update instead (alternating least squares) exposes ``fit_epoch() -> float`` and the
trainer runs its epochs the same way, with the same progress, validation and stopping.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from recfunnel.config import OPTIMIZERS, TrainerConfig
from recfunnel.data.interactions import Interactions
from recfunnel.errors import RecfunnelError, TrainingError
from recfunnel.progress import make_progress


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` picks CUDA when present, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RecfunnelError(
            f"device={device!r} was asked for but no CUDA GPU is available; use device='cpu'",
            cli="--device cuda was asked for but no CUDA GPU is available; use cpu",
        )
    return torch.device(device)


def make_optimizer(name: str, params, learning_rate: float, weight_decay: float = 0.0):
    """An optimiser by name. Adagrad starts its accumulators at 0.1 as Keras does."""
    if name == "adagrad":
        return torch.optim.Adagrad(
            params, lr=learning_rate, initial_accumulator_value=0.1, eps=1e-7,
            weight_decay=weight_decay,
        )  # fmt: skip
    if name == "adam":
        return torch.optim.Adam(params, lr=learning_rate, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=learning_rate, weight_decay=weight_decay)
    raise RecfunnelError(f"unknown optimizer {name!r}; use one of {', '.join(OPTIMIZERS)}")


def to_tensors(
    data: Interactions | dict[str, torch.Tensor], device: torch.device
) -> dict[str, torch.Tensor]:
    """The columns of ``data`` as tensors on ``device`` (a dict of columns is moved as is)."""
    if isinstance(data, dict):
        return {name: torch.as_tensor(column).to(device) for name, column in data.items()}
    out = {
        "user": torch.as_tensor(data.users, device=device),
        "item": torch.as_tensor(data.items, device=device),
    }
    for name, column in (("rating", data.ratings), ("weight", data.weights),
                         ("timestamp", data.timestamps)):  # fmt: skip
        if column is not None:
            out[name] = torch.as_tensor(column, device=device)
    return out


@dataclass
class TrainingLog:
    """What a fit did: per-epoch records: ``loss``, ``seconds`` and any validation metrics."""

    epochs: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False


class Trainer:
    """Trains any recfunnel network (see the module docstring)."""

    def __init__(
        self, config: TrainerConfig | None = None, *, progress: bool | str = False, **overrides
    ) -> None:
        self.config = TrainerConfig.create(config, **overrides)
        if self.config.monitor == "auto":  # a model resolves it; alone, rank by recall@10
            self.config = dataclasses.replace(self.config, monitor="recall@10")
        self.progress = progress

    def fit(
        self,
        model: nn.Module,
        data: Interactions | dict[str, torch.Tensor],
        *,
        validate: Callable[[], dict[str, float]] | None = None,
    ) -> TrainingLog:
        cfg = self.config
        log = TrainingLog()
        closed_form = not hasattr(model, "compute_loss")
        device = resolve_device(cfg.device)
        generator = torch.Generator().manual_seed(cfg.seed)
        optimizer = None
        tensors = None
        if not closed_form:
            model.to(device)
            optimizer = make_optimizer(
                cfg.optimizer, model.parameters(), cfg.learning_rate, cfg.weight_decay
            )
            tensors = to_tensors(data, device)
        rows = len(next(iter(tensors.values()))) if tensors else len(data)
        best_value = None
        best_state = None
        bad_epochs = 0
        progress = make_progress(self.progress, desc="train",
                                 unit="rows" if not closed_form else "iterations")  # fmt: skip
        for epoch in range(cfg.epochs):
            started = time.perf_counter()
            if closed_form:
                progress.start(0, epoch=epoch + 1, epochs=cfg.epochs)
                loss = float(_fit_epoch(model, progress))
            else:
                progress.start(rows, epoch=epoch + 1, epochs=cfg.epochs)
                loss = self._epoch(model, tensors, rows, optimizer, generator, device, progress)
            if not math.isfinite(loss):
                raise TrainingError(
                    f"training diverged at epoch {epoch + 1} (loss is {loss}); lower the learning "
                    "rate or raise the regularization"
                )
            record = {"epoch": epoch + 1, "loss": loss, "seconds": time.perf_counter() - started}
            if validate is not None:
                if not closed_form:
                    model.eval()
                record.update(validate())
            log.epochs.append(record)
            shown = {"loss": loss}
            if cfg.monitor in record:
                shown[cfg.monitor] = record[cfg.monitor]
            progress.finish(**shown)
            if validate is not None and cfg.patience is not None:
                value = record.get(cfg.monitor)
                if value is None:
                    raise RecfunnelError(f"validation gave no {cfg.monitor!r} to monitor")
                better = best_value is None or (
                    value < best_value if cfg.minimize else value > best_value
                )
                if better:
                    best_value, bad_epochs = value, 0
                    log.best_epoch = epoch + 1
                    best_state = copy.deepcopy(model.state_dict())
                else:
                    bad_epochs += 1
                    if bad_epochs >= cfg.patience:
                        log.stopped_early = True
                        break
        progress.close()
        if best_state is not None:
            model.load_state_dict(best_state)
        if not closed_form:
            model.eval()
        return log

    def _epoch(self, model, tensors, n, optimizer, generator, device, progress) -> float:
        model.train()
        order = torch.randperm(n, generator=generator).to(device)
        total = 0.0
        for start in range(0, n, self.config.batch_size):
            rows = order[start : start + self.config.batch_size]
            batch = {name: column[rows] for name, column in tensors.items()}
            loss = model.compute_loss(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = float(loss.detach())
            total += value
            progress.update(len(rows), loss=value)
        return total


def _fit_epoch(model, progress) -> float:
    """One closed-form iteration; a model whose ``fit_epoch`` takes ``progress`` reports its
    own steps (e.g. rows solved) through it."""
    if "progress" in inspect.signature(model.fit_epoch).parameters:
        return model.fit_epoch(progress=progress)
    return model.fit_epoch()


def seed_everything(seed: int) -> None:
    """Seed PyTorch and NumPy's global generators (model initialisation)."""
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))  # noqa: NPY002 - legacy global seed for third-party code
