"""Typed hyper-parameters: one frozen dataclass per model, the trainer's in :class:`TrainerConfig`.

Every field carries a type, a default and ``metadata={"help": ...}`` (plus, where it applies,
``choices`` or bounds). A config is checked in ``__post_init__``: a wrong type or value raises a
one-line :class:`~recfunnel.errors.RecfunnelError` before any data is read or any work starts.
Gradient-trained models nest ``trainer: TrainerConfig``; composite models nest their parts'
configs (``TwoStageConfig.retrieval: TwoTowerConfig``).

The same objects are the CLI's options (``--set trainer.epochs=3``, ``--set retrieval.dim=64``;
a bare name such as ``--set epochs=3`` sets every field of that name), the presets
(:mod:`recfunnel.presets`) and what a saved run stores (:meth:`Config.to_dict`, read back by
:meth:`Config.from_dict`).

Adding a hyper-parameter to a model is one field here, e.g.::

    temperature: float = option(1.0, "softmax temperature", gt=0.0)
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from recfunnel.errors import RecfunnelError

__all__ = [
    "BPRConfig",
    "BlendConfig",
    "Config",
    "EASEConfig",
    "LargeCatalogueConfig",
    "MostPopularConfig",
    "MultitaskConfig",
    "RP3betaConfig",
    "RankingConfig",
    "SGDMFConfig",
    "SequentialConfig",
    "TrainerConfig",
    "TwoStageConfig",
    "TwoTowerConfig",
    "WALSConfig",
    "option",
]

_MISSING = dataclasses.MISSING


def option(
    default=_MISSING,
    help: str = "",
    *,
    factory=None,
    choices: tuple | None = None,
    min: float | None = None,
    max: float | None = None,
    gt: float | None = None,
):
    """A config field: its default, a one-line ``help`` and the values it accepts.

    ``choices`` lists the allowed values; ``min``/``max`` are inclusive bounds and ``gt`` an
    exclusive lower bound (for numbers, and for each element of a tuple of numbers).
    """
    metadata = {"help": help, "choices": choices, "min": min, "max": max, "gt": gt}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _hints(cls) -> dict[str, Any]:
    cached = cls.__dict__.get("_hint_cache")
    if cached is None:
        cached = typing.get_type_hints(cls)
        cls._hint_cache = cached
    return cached


def _is_config_type(tp) -> bool:
    return isinstance(tp, type) and issubclass(tp, Config)


def _nested_type(cls, f):
    """The config class of a nested field: its default's class (a closed-form model's trainer
    is a :class:`ClosedFormTrainerConfig` though the field is typed ``TrainerConfig``)."""
    if f.default_factory is not _MISSING:
        return type(f.default_factory())
    return _hints(cls)[f.name]


def _unwrap_optional(tp):
    """``X | None`` -> (X, True); anything else -> (tp, False)."""
    args = typing.get_args(tp)
    if type(None) in args and len(args) == 2:
        return next(a for a in args if a is not type(None)), True
    return tp, False


def _type_name(tp) -> str:
    tp, optional = _unwrap_optional(tp)
    if typing.get_origin(tp) is tuple:
        name = f"list of {typing.get_args(tp)[0].__name__}"
    else:
        name = {
            int: "an integer",
            float: "a number",
            bool: "true or false",
            str: "a string",
            dict: "a table",
        }.get(  # fmt: skip
            tp, getattr(tp, "__name__", str(tp))
        )
    return f"{name} or none" if optional else name


class Config:
    """Shared behaviour of every config dataclass (a mixin; subclasses are frozen dataclasses).

    Class attributes:
        renamed: old field name -> new, so configs saved before a rename still read.
    """

    renamed: ClassVar[dict[str, str]] = {}
    #: whether a bare name (``epochs``) also sets this part's field of that name
    bare_names: ClassVar[bool] = True

    # ------------------------------------------------------------------ checking
    def __post_init__(self) -> None:
        for f in fields(self):
            self._check_field(f)
        self.check()

    def check(self) -> None:
        """Checks across fields (one-line :class:`RecfunnelError`); override per model."""

    def _check_field(self, f) -> None:
        tp = _hints(type(self))[f.name]
        value = getattr(self, f.name)
        if _is_config_type(tp):
            tp = _nested_type(type(self), f)
        coerced = _coerce(value, tp, f.name)
        if coerced is not value:
            object.__setattr__(self, f.name, coerced)
        _check_bounds(coerced, f)

    # ---------------------------------------------------------------- building
    @classmethod
    def create(cls, base: Config | dict | None = None, **overrides):
        """A config from ``base`` (a config, a nested dict, or the defaults) and keyword
        overrides. A bare name sets every field of that name (``epochs`` reaches
        ``trainer.epochs``, and both stages of a composite); ``None`` values are skipped."""
        if base is None:
            config = cls()
        elif isinstance(base, cls):
            config = base
        elif isinstance(base, dict):
            config = cls.from_dict(base)
        else:
            raise RecfunnelError(
                f"{cls.__name__} expected, not {type(base).__name__}; pass a config or a dict"
            )
        return config.override(**{k: v for k, v in overrides.items() if v is not None})

    def override(self, **values):
        """A copy with ``values`` set: a name may be a dotted path (``retrieval.trainer.epochs``)
        or a bare name that sets every field of that name in the tree; a part's name
        (``retrieval``) takes a config or a dict merged into it. All values are applied first
        and checked together, so ``override(objective="listwise", autoencoder=0)`` works in
        either order. An unknown name is refused with the names this config has."""
        data = self.to_dict()
        for name, value in values.items():
            self._put(data, name.replace("-", "_"), value)
        return type(self).from_dict(data)

    def _put(self, data: dict, name: str, value) -> None:
        part = self._part(name)
        if part is not None:
            if isinstance(value, Config):
                _set_path(data, name, value.to_dict())
                return
            if isinstance(value, dict):
                for key, sub in value.items():
                    self._put(data, f"{name}.{key.replace('-', '_')}", sub)
                return
            if value is None:  # e.g. large = none in a run saved by recfunnel 1: the defaults
                return
            raise RecfunnelError(f"{name} takes a table of options, not {value!r}")
        paths = [path for path, _ in self.targets(name)]
        if not paths:
            *head, last = name.split(".")
            new = self._renames().get(last)
            if new is not None:  # an old name (e.g. history -> pool_seen_items)
                self._put(data, ".".join([*head, new]), value)
                return
            raise RecfunnelError(
                f"{type(self).__name__} has no option {name!r}; known: {', '.join(self.paths())}"
            )
        for path in paths:
            _set_path(data, path, list(value) if isinstance(value, tuple) else value)

    def _renames(self) -> dict[str, str]:
        """Old field name -> new, over this config and its nested parts."""
        out = dict(self.renamed)
        for f in fields(self):
            child = getattr(self, f.name)
            if isinstance(child, Config):
                out.update(child._renames())
        return out

    def _part(self, name: str):
        """The nested config at dotted ``name`` (``retrieval``, ``ranker.trainer``), or None."""
        node = self
        for segment in name.split("."):
            child = getattr(node, segment, None) if segment in _field_names(node) else None
            if not isinstance(child, Config):
                return None
            node = child
        return node

    def _set(self, name: str, value):
        return self.override(**{name: value})

    def with_strings(self, assignments: dict[str, str]):
        """A copy with ``NAME=VALUE`` strings (``--set``) parsed by each field's type."""
        config = self
        for name, text in assignments.items():
            key = name.replace("-", "_")
            nested = {
                f.name for f in fields(config) if _is_config_type(_hints(type(config))[f.name])
            }
            if key in nested and text.lstrip().startswith("{"):
                # a whole part at once: --set 'retrieval={"dim": 8, "epochs": 2}'
                try:
                    table = json.loads(text)
                except ValueError:
                    raise RecfunnelError(
                        f"--set {name} expects a JSON object, not {text!r}"
                    ) from None
                for sub, value in table.items():
                    config = config._set(f"{key}.{sub}", value)
                continue
            targets = config.targets(key)
            if not targets:
                raise RecfunnelError(
                    f"--set {name}: {type(config).__name__} has no option {name!r}; its "
                    f"options: {', '.join(config.paths())}"
                )
            _, tp = targets[0]
            value = parse_value(text, tp, name)
            config = config._set(key, value)
        return config

    # ----------------------------------------------------------------- reading
    def targets(self, name: str) -> list[tuple[str, Any]]:
        """(path, type) of every field that the (dotted or bare) ``name`` sets; a bare name
        does not reach into a part whose class has ``bare_names = False``."""
        bare = "." not in name
        return [
            (p, tp)
            for p, tp, _ in self.options()
            if _matches(p, name) and not (bare and self._sheltered(p))
        ]

    def _sheltered(self, path: str) -> bool:
        node = self
        for part in path.split(".")[:-1]:
            node = getattr(node, part)
            if not node.bare_names:
                return True
        return False

    def paths(self) -> list[str]:
        """Dotted paths of every leaf option, e.g. ``trainer.epochs``."""
        return [path for path, _, _ in self.options()]

    @classmethod
    def leaf_fields(cls):
        """Fields that are options (nested configs excluded)."""
        hints = _hints(cls)
        return [f for f in fields(cls) if not _is_config_type(hints[f.name])]

    def options(self, prefix: str = "") -> list[tuple[str, Any, Any]]:
        """(dotted path, type, field) of every leaf option, nested configs flattened."""
        out = []
        hints = _hints(type(self))
        for f in fields(self):
            tp = hints[f.name]
            if _is_config_type(tp):
                out += getattr(self, f.name).options(f"{prefix}{f.name}.")
            elif self.applies(f.name):
                out.append((f"{prefix}{f.name}", tp, f))
        return out

    def applies(self, name: str) -> bool:
        """Whether field ``name`` means something for this model (see TrainerConfig.used)."""
        return True

    def to_dict(self) -> dict:
        """Nested plain dict (JSON/TOML-ready: tuples become lists)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Config):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict):
        """Read :meth:`to_dict`'s output back; unknown keys are refused. Flat legacy forms
        (``{"epochs": 3}`` beside model fields) are routed as :meth:`create` routes names."""
        if not isinstance(data, dict):
            raise RecfunnelError(f"{cls.__name__} must be a table of options, not {data!r}")
        hints = _hints(cls)
        direct, rest = {}, {}
        own = {f.name for f in fields(cls)}
        for key, value in data.items():
            key = cls.renamed.get(key, key)
            if key in own:
                if _is_config_type(hints[key]) and value is None:
                    continue  # a part saved as none (recfunnel 1's large = none): its defaults
                if _is_config_type(hints[key]) and isinstance(value, dict):
                    value = _nested_type(
                        cls, next(f for f in fields(cls) if f.name == key)
                    ).from_dict(value)
                direct[key] = value
            else:
                rest[key] = value
        try:
            config = cls(**direct)
        except TypeError as exc:
            raise RecfunnelError(f"bad {cls.__name__}: {exc}") from None
        for key, value in rest.items():
            config = config._set(key, value)
        return config

    def describe(self) -> list[tuple[str, Any, str]]:
        """(path, value, help) of every option, for ``recfunnel presets`` and ``--help``."""
        return [
            (path, _value_at(self, path), f.metadata.get("help", ""))
            for path, _, f in self.options()
        ]


def _matches(path: str, name: str) -> bool:
    """A dotted ``name`` matches a path exactly or as a suffix at a dot boundary after a model
    part (``retrieval.epochs`` matches ``retrieval.trainer.epochs``); a bare name matches every
    path that ends with it."""
    if path == name:
        return True
    parts, wanted = path.split("."), name.split(".")
    if parts[-1] != wanted[-1]:
        return False
    if len(wanted) == 1:
        return True
    # every given segment must appear in order; only "trainer" may be skipped
    i = 0
    for part in parts:
        if i < len(wanted) and part == wanted[i]:
            i += 1
        elif part != "trainer":
            return False
    return i == len(wanted)


def _value_at(config, path: str):
    value = config
    for part in path.split("."):
        value = getattr(value, part)
    return value


def _field_names(config) -> set[str]:
    return {f.name for f in fields(config)}


def _set_path(data: dict, path: str, value) -> None:
    *parents, last = path.split(".")
    for part in parents:
        data = data[part]
    data[last] = value


def _coerce(value, tp, name: str):
    """``value`` checked against type ``tp`` (ints accepted as floats, lists as tuples)."""
    base, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise RecfunnelError(f"{name} must be {_type_name(tp)}, not none")
    if _is_config_type(base):
        if isinstance(value, dict):
            return base.from_dict(value)
        if not isinstance(value, base):
            raise RecfunnelError(f"{name} must be a {base.__name__}, not {value!r}")
        return value
    if base is bool:
        if isinstance(value, bool):
            return value
    elif base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif base is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise RecfunnelError(f"{name} must be a finite number, not {value}")
            return value if isinstance(value, float) else float(value)
    elif base is str:
        if isinstance(value, str):
            return value
    elif base is dict:
        if isinstance(value, dict):
            return value
    elif typing.get_origin(base) is tuple:
        element = typing.get_args(base)[0]
        if isinstance(value, (list, tuple)):
            items = tuple(_coerce(v, element, f"each of {name}") for v in value)
            return value if isinstance(value, tuple) and items == value else items
    else:  # pragma: no cover - a field type this module does not know
        raise TypeError(f"unsupported config type {tp!r} for {name}")
    raise RecfunnelError(f"{name} must be {_type_name(tp)}, not {value!r}")


def _check_bounds(value, f) -> None:
    meta = f.metadata
    values = value if isinstance(value, tuple) else (value,)
    for v in values:
        if v is None:
            continue
        choices = meta.get("choices")
        if choices is not None and v not in choices:
            shown = ", ".join(str(c) for c in choices)
            raise RecfunnelError(f"{f.name} must be one of {shown}, not {v!r}")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if meta.get("min") is not None and v < meta["min"]:
            raise RecfunnelError(f"{f.name} must be at least {meta['min']}, not {v}")
        if meta.get("max") is not None and v > meta["max"]:
            raise RecfunnelError(f"{f.name} must be at most {meta['max']}, not {v}")
        if meta.get("gt") == 0 and not v > 0:
            raise RecfunnelError(f"{f.name} must be positive, not {v}")
        if meta.get("gt") is not None and not v > meta["gt"]:
            raise RecfunnelError(f"{f.name} must be greater than {meta['gt']}, not {v}")


_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def parse_value(text: str, tp, name: str = "value"):
    """Parse a command-line string as a value of type ``tp`` (one-line error if it is not)."""
    base, optional = _unwrap_optional(tp)
    raw = text.strip()
    if optional and raw.lower() in ("none", "null", ""):
        return None
    bad = RecfunnelError(f"--set {name} expects {_type_name(tp)}, not {text!r}")
    if base is bool:
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise bad
    if base is int:
        try:
            return int(raw)
        except ValueError:
            raise bad from None
    if base is float:
        try:
            value = float(raw)
        except ValueError:
            raise bad from None
        if not math.isfinite(value):
            raise bad
        return value
    if base is str:
        if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
            raw = raw[1:-1]
        return raw
    if base is dict or (typing.get_origin(base) is tuple and raw.startswith("[")):
        try:  # a JSON table, or a JSON list (of tables)
            value = json.loads(raw)
        except ValueError:
            raise bad from None
        return _coerce(value, tp, name)
    if typing.get_origin(base) is tuple:
        element = typing.get_args(base)[0]
        inner = raw.strip("[]() ")
        if not inner:
            return ()
        return tuple(parse_value(part, element, name) for part in inner.split(","))
    raise bad  # pragma: no cover


# ============================================================================ the configs
DEVICES = ("auto", "cpu", "cuda")
OPTIMIZERS = ("adagrad", "adam", "adamw", "sgd")
LR_SCHEDULES = ("constant", "linear")


def _check_device(device: str) -> None:
    if not (device in DEVICES or (device.startswith("cuda:") and device[5:].isdigit())):
        raise RecfunnelError(f"device must be one of auto, cpu, cuda or cuda:N, not {device!r}")


@dataclass(frozen=True)
class TrainerConfig(Config):
    """How to train (:class:`~recfunnel.training.Trainer`): epochs, batches, optimiser, device,
    seed and early stopping. A model's config nests one with that model's defaults."""

    epochs: int = option(3, "passes over the data (iterations for closed-form models)", min=1)
    batch_size: int = option(8192, "rows per gradient step", min=1)
    optimizer: str = option("adagrad", "optimiser", choices=OPTIMIZERS)
    learning_rate: float = option(0.1, "optimiser step size", gt=0.0)
    weight_decay: float = option(0.0, "optimiser weight decay (L2 on every parameter)", min=0.0)
    device: str = option("auto", "auto (CUDA when present), cpu, cuda or cuda:N")
    seed: int = option(0, "seeds initialisation and shuffling", min=0)
    patience: int | None = option(
        None,
        "early stopping: epochs without a better validation metric before stopping (the best "
        "epoch's weights are restored); none trains every epoch",
        min=1,
    )
    monitor: str = option(
        "auto", "validation metric for early stopping; auto: rmse for rating models, else recall@10"
    )
    max_examples: int | None = option(
        None,
        "stop a fit once it has trained on this many rows (the last epoch may be partial); "
        "none trains every epoch",
        min=1,
    )
    lr_schedule: str = option(
        "constant",
        "constant, or linear: the step size falls linearly from learning_rate to 0 over the "
        "planned rows (epochs x rows, or max_examples)",
        choices=LR_SCHEDULES,
    )

    #: fields every closed-form model honours (the others are gradient settings)
    CLOSED_FORM: ClassVar[tuple[str, ...]] = ("epochs", "device", "seed", "patience", "monitor")

    def check(self) -> None:
        device = self.device
        if not (device in DEVICES or (device.startswith("cuda:") and device[5:].isdigit())):
            raise RecfunnelError(f"device must be one of auto, cpu, cuda or cuda:N, not {device!r}")

    @property
    def minimize(self) -> bool:
        """Whether the monitored metric is better when lower (errors and losses)."""
        return self.monitor in ("rmse", "mae", "loss") or self.monitor.endswith(("rmse", "mae"))


@dataclass(frozen=True)
class ClosedFormTrainerConfig(TrainerConfig):
    """The trainer of a closed-form model: only epochs, device, seed, patience and monitor
    apply (there is no optimiser or batch)."""

    def applies(self, name: str) -> bool:
        return name in self.CLOSED_FORM


def trainer(**defaults) -> Any:
    """A ``trainer`` field whose defaults are this model's (gradient-trained)."""
    return option(factory=lambda: TrainerConfig(**defaults), help="how to train")


def closed_form_trainer(**defaults) -> Any:
    """A ``trainer`` field of a closed-form model (no optimiser or batches)."""
    return option(factory=lambda: ClosedFormTrainerConfig(**defaults), help="how to train")


INITS = ("uniform", "normal")
#: the multitask model's retrieval softmaxes
SOFTMAXES = ("in-batch", "full")
#: where a two-tower's negatives come from (:class:`~recfunnel.tasks.RetrievalTask`)
RETRIEVAL_SOFTMAXES = ("in-batch", "sampled", "mixed", "full")
SAMPLERS = ("uniform", "popularity")
REDUCTIONS = ("sum", "mean")


@dataclass(frozen=True)
class MostPopularConfig(Config):
    """The most-popular baseline has no hyper-parameters."""


@dataclass(frozen=True)
class LargeCatalogueConfig(Config):
    """What a two-tower with ``softmax="auto"`` uses instead on a large catalogue (more than
    20,000 items, or rows x items above 5e9); ``none`` keeps the model's own setting, and the
    softmax becomes ``mixed`` unless set here. Only a dotted name reaches these
    (``--set large.batch_size=512``): ``--epochs 3`` sets the model's own epochs."""

    bare_names: ClassVar[bool] = False

    softmax: str | None = option(
        None, "softmax (none or auto: mixed)", choices=(*RETRIEVAL_SOFTMAXES, "auto")
    )
    negatives: int | None = option(None, "items sampled per batch (none: the model's)", min=0)
    sampler: str | None = option(
        None, "how negatives are drawn (none: the model's)", choices=SAMPLERS
    )
    logq_correction: bool | None = option(
        None, "subtract log sampling probabilities (none: the model's)"
    )
    sparse_updates: bool | None = option(
        None, "sparse gradients and a lazy Adam (none: the model's)"
    )
    batch_size: int | None = option(None, "rows per gradient step (none: the trainer's)", min=1)
    learning_rate: float | None = option(None, "optimiser step size (none: the trainer's)", gt=0.0)
    epochs: int | None = option(None, "passes over the data (none: the trainer's)", min=1)
    max_examples: int | None = option(
        None, "stop a fit after this many rows (none: the trainer's)", min=1
    )
    optimizer: str | None = option(None, "optimiser (none: the trainer's)", choices=OPTIMIZERS)
    weight_decay: float | None = option(
        None, "optimiser weight decay (none: the trainer's; sparse updates need 0)", min=0.0
    )
    lr_schedule: str | None = option(
        None, "step-size schedule (none: the trainer's)", choices=LR_SCHEDULES
    )
    user_l2: float | None = option(None, "L2 on the batch's queries (none: the model's)", min=0.0)
    item_l2: float | None = option(
        None, "L2 on the batch's positive items (none: the model's)", min=0.0
    )
    history_sample: int | None = option(
        None, "items pooled per training row at most (none: the model's)", min=1
    )
    user_embedding: bool | None = option(
        None, "a learned vector per user in the query (none: the model's)"
    )

    #: fields that belong to the trainer
    TRAINER: ClassVar[tuple[str, ...]] = (
        "batch_size", "learning_rate", "epochs", "max_examples", "optimizer", "weight_decay",
        "lr_schedule",
    )  # fmt: skip


@dataclass(frozen=True)
class TwoTowerConfig(Config):
    """Two-tower retrieval (:class:`~recfunnel.models.TwoTower`)."""

    renamed: ClassVar[dict[str, str]] = {"history": "pool_seen_items"}

    dim: int = option(32, "embedding dimension", min=1)
    softmax: str = option(
        "in-batch",
        "in-batch (TFRS), sampled, mixed (in-batch + sampled), full (every item), or auto: full "
        "on a small catalogue, else the settings in large",
        choices=(*RETRIEVAL_SOFTMAXES, "auto"),
    )
    negatives: int = option(0, "sampled and mixed softmax: items drawn per batch", min=0)
    sampler: str = option("uniform", "how negatives are drawn: uniformly or by popularity",
                          choices=SAMPLERS)  # fmt: skip
    temperature: float = option(1.0, "softmax temperature (logits are divided by it)", gt=0.0)
    remove_accidental_hits: bool = option(
        False, "in-batch softmax: mask other rows' copies of the positive item"
    )
    logq_correction: bool = option(
        False, "subtract each negative's log sampling probability (sampling correction)"
    )
    reduction: str = option("sum", "sum (TFRS) or mean of the per-row losses", choices=REDUCTIONS)
    sparse_updates: bool = option(
        False,
        "sparse gradients: a step costs the rows it touches (Adam becomes a lazy SparseAdam); "
        "not with the full softmax",
    )
    pool_seen_items: bool = option(
        False, "add the pooled embeddings of the user's training items to the query tower"
    )
    user_l2: float = option(0.0, "L2 penalty on each batch's query embeddings", min=0.0)
    item_l2: float = option(
        0.0, "L2 penalty on each batch's positive item embeddings (biases excluded)", min=0.0
    )
    user_embedding: bool = option(
        True,
        "with pool_seen_items: a learned vector per user added to the pooled history; "
        "off: the query is the pooled history alone",
    )
    history_sample: int | None = option(
        None,
        "with pool_seen_items and sparse_updates: each training row pools at most this many of "
        "its user's items, drawn at random and scaled so the query is unbiased (evaluation and "
        "serving pool the whole history); none: every item",
        min=1,
    )
    item_bias: bool = option(False, "learn a per-item bias (popularity prior)")
    init: str = option("uniform", "embedding initialisation", choices=INITS)
    init_scale: float = option(0.05, "uniform half-width or normal std of the embeddings", gt=0.0)
    large: LargeCatalogueConfig = option(
        factory=LargeCatalogueConfig, help="softmax=auto on a large catalogue: these settings"
    )
    trainer: TrainerConfig = trainer()

    def check(self) -> None:
        if self.softmax == "sampled" and self.negatives < 1:
            raise RecfunnelError("the sampled softmax needs negatives; set negatives to 1 or more")
        if self.sparse_updates and self.softmax == "full":
            raise RecfunnelError(
                "sparse_updates does not go with the full softmax (its gradient reaches every "
                "item); use softmax=mixed or sampled"
            )
        if self.sparse_updates and self.trainer.weight_decay:
            raise RecfunnelError(
                "weight_decay does not go with sparse updates; set weight_decay=0 (user_l2 "
                "and item_l2 regularise instead) or sparse_updates=false"
            )

    def resolve_large(self) -> TwoTowerConfig:
        """This config with the ``large`` settings applied (softmax ``mixed`` by default)."""
        values = {k: v for k, v in self.large.to_dict().items() if v is not None}
        if values.get("softmax", "auto") == "auto":
            values["softmax"] = "mixed"
        own = {f.name for f in fields(self)}
        paths = {}
        for name, value in values.items():
            if name in LargeCatalogueConfig.TRAINER:
                paths[f"trainer.{name}"] = value
            elif name in own:
                paths[name] = value
        return self.override(**paths)


@dataclass(frozen=True)
class WALSConfig(Config):
    """Weighted alternating least squares (:class:`~recfunnel.models.WALS`)."""

    dim: int = option(32, "number of factors", min=1)
    regularization: float = option(0.01, "ridge strength (scaled per row by reg_exponent)", gt=0.0)
    alpha: float = option(1.0, "implicit: confidence of an observed cell = alpha * weight", gt=0.0)
    reg_exponent: float = option(0.0, "0 plain ridge; 1 frequency-scaled (ALS-WR)", min=0.0)
    feedback: str = option("implicit", "implicit interactions or explicit ratings",
                           choices=("implicit", "explicit"))  # fmt: skip
    solver: str = option("cg", "cholesky (exact) or cg (warm-started conjugate gradient)",
                         choices=("cholesky", "cg"))  # fmt: skip
    cg_steps: int = option(3, "conjugate-gradient steps per half iteration", min=1)
    init_scale: float = option(0.01, "std of the initial factors", gt=0.0)
    trainer: TrainerConfig = closed_form_trainer(epochs=15, device="cpu")


#: users + items above which a gradient-trained MF with ``sparse_updates`` unset trains with
#: sparse gradients: a dense step costs O(users + items) (every row's Adam update), a sparse
#: one O(batch). BPR: 3.5x more rows a second at 100k x 20k, 26x at 1M x 200k, and below
#: 100k its dense Adam is about as fast with slightly better quality; SGD-MF: 3.4x faster from
#: 20k x 10k on, same RMSE (docs/scale.md)
SPARSE_BPR_ABOVE = 100_000
SPARSE_SGD_MF_ABOVE = 20_000
#: the same for the ranking model, whose SVD++ term also pools every user's history in a dense
#: step (docs/scale.md)
SPARSE_RANKING_ABOVE = 100_000


def _sparse_help(above: int) -> str:
    return ("sparse gradients and a lazy Adam: a step moves only the rows it touches (none: when "
            f"users + items exceed {above:,} and weight_decay is 0)")  # fmt: skip


def sparse_updates_for(config, num_users: int, num_items: int, above: int) -> bool:
    """A gradient-trained model's ``sparse_updates``; unset: whether users + items exceed
    ``above`` and no weight decay is asked for (a lazy Adam has none)."""
    if config.sparse_updates is not None:
        return bool(config.sparse_updates)
    return num_users + num_items > above and not config.trainer.weight_decay


def _check_sparse_updates(config) -> None:
    if config.sparse_updates and config.trainer.weight_decay:
        raise RecfunnelError(
            "weight_decay does not go with sparse updates; set weight_decay=0 (the model's own "
            "L2 penalty regularises the rows a step touches) or sparse_updates=false"
        )


@dataclass(frozen=True)
class SGDMFConfig(Config):
    """Biased matrix factorization on ratings (:class:`~recfunnel.models.SGDMF`)."""

    dim: int = option(32, "number of factors", min=1)
    regularization: float = option(0.1, "L2 weight on each row's factors and biases", min=0.0)
    init_scale: float = option(0.1, "std of the initial factors", gt=0.0)
    sparse_updates: bool | None = option(None, _sparse_help(SPARSE_SGD_MF_ABOVE))
    trainer: TrainerConfig = trainer(
        optimizer="adam", learning_rate=0.01, batch_size=1024, epochs=20, device="cpu"
    )

    def check(self) -> None:
        _check_sparse_updates(self)


#: how BPR draws its negative items
BPR_SAMPLING = ("uniform", "popularity")
BPR_WEIGHTING = ("mean", "hardest")


@dataclass(frozen=True)
class BPRConfig(Config):
    """Bayesian personalised ranking MF (:class:`~recfunnel.models.BPR`)."""

    dim: int = option(32, "number of factors", min=1)
    regularization: float = option(
        0.01, "L2 weight on the user, positive and negative rows", min=0.0
    )
    negatives: int = option(8, "items sampled per positive (the loss averages their terms)", min=1)
    sampling: str = option(
        "uniform", "negatives drawn uniformly or by popularity (count ** 0.75)",
        choices=BPR_SAMPLING,
    )  # fmt: skip
    weighting: str = option(
        "mean", "the loss averages the sampled negatives' terms (mean) or keeps only the highest "
        "scored one (hardest: dynamic negative sampling, Zhang et al. 2013)",
        choices=BPR_WEIGHTING,
    )  # fmt: skip
    init_scale: float = option(0.1, "std of the initial factors", gt=0.0)
    sparse_updates: bool | None = option(None, _sparse_help(SPARSE_BPR_ABOVE))
    trainer: TrainerConfig = trainer(
        optimizer="adam",
        learning_rate=0.02,
        lr_schedule="linear",
        batch_size=1024,
        epochs=20,
        device="cpu",
    )

    def check(self) -> None:
        _check_sparse_updates(self)


@dataclass(frozen=True)
class EASEConfig(Config):
    """EASE, the closed-form item-item autoencoder (:class:`~recfunnel.models.EASE`)."""

    regularization: float = option(300.0, "lambda, the L2 weight on the item-item matrix", gt=0.0)
    window: float | None = option(
        None,
        "order-aware Gram: two items k places apart in a user's time order co-occur with weight "
        "floor + (1 - floor) exp(-k / window); none = every pair weighs 1 (needs timestamps)",
        gt=0.0,
    )
    floor: float = option(0.3, "the weight of a co-occurrence however far apart (with window)",
                          min=0.0, max=1.0)  # fmt: skip
    max_memory_gb: float | None = option(
        None, "refuse to fit beyond this memory; none = 3/4 of the memory available", gt=0.0
    )
    device: str = option("cpu", "auto, cpu, cuda or cuda:N for the inversion")

    def check(self) -> None:
        _check_device(self.device)


@dataclass(frozen=True)
class RP3betaConfig(Config):
    """RP3beta, the closed-form item-item random walk (:class:`~recfunnel.models.RP3beta`)."""

    alpha: float = option(0.8, "power on the transition probabilities (1 = plain random walk)",
                          gt=0.0)  # fmt: skip
    beta: float = option(0.5, "popularity penalty: similarities to item j divided by count^beta",
                         min=0.0)  # fmt: skip
    neighbours: int | None = option(
        None, "keep each item's strongest neighbours only; none = all", min=1
    )
    max_memory_gb: float | None = option(
        None, "refuse to fit beyond this memory; none = 3/4 of the memory available", gt=0.0
    )
    device: str = option("cpu", "auto, cpu, cuda or cuda:N for the product")

    def check(self) -> None:
        _check_device(self.device)


HEADS = ("dot", "mlp", "dcn", "dot+mlp", "dot+dcn")
OBJECTIVES = ("rating", "watch", "listwise")


@dataclass(frozen=True)
class RankingConfig(Config):
    """Ranking over ids, side features and context (:class:`~recfunnel.models.RankingModel`)."""

    renamed: ClassVar[dict[str, str]] = {"history": "pool_seen_items"}

    dim: int = option(32, "embedding dimension", min=1)
    head: str = option("dot", "scoring head", choices=HEADS)
    hidden: tuple[int, ...] = option((256, 64), "MLP layer sizes before the output unit", min=1)
    cross_layers: int = option(1, "DCN-v2 cross layers (head dcn)", min=0)
    cross_rank: int | None = option(None, "rank of the cross layers; none = full", min=1)
    features: bool = option(True, "use the dataset's user and item side features")
    pool_seen_items: bool = option(
        True, "SVD++: add the pooled embeddings of the user's training items"
    )
    context: bool = option(False, "add a bias per timestamp bucket")
    objective: str = option("rating", "rating (MSE), watch (BCE) or listwise (softmax)",
                            choices=OBJECTIVES)  # fmt: skip
    negatives: int = option(4, "sampled negatives per positive (watch, listwise)", min=1)
    l2: float = option(0.0, "penalty on the squared norms of the batch's vectors", min=0.0)
    biases: bool = option(True, "keep user, item and global biases")
    init_scale: float = option(0.01, "std of the embeddings' initialisation", gt=0.0)
    sparse_updates: bool | None = option(None, _sparse_help(SPARSE_RANKING_ABOVE) + "; the "
                                         "SVD++ term then pools a batch's users only")  # fmt: skip
    autoencoder: int = option(0, "hidden units of a blended item autoencoder; 0 = none", min=0)
    autoencoder_l2: float = option(100.0, "the autoencoder's L2 penalty", min=0.0)
    autoencoder_epochs: int = option(60, "the autoencoder's epochs", min=1)
    autoencoder_weight: float = option(0.5, "the autoencoder's share of the blend", min=0.0,
                                       max=1.0)  # fmt: skip
    trainer: TrainerConfig = trainer(
        optimizer="adam", learning_rate=0.005, batch_size=1024, epochs=20
    )

    def check(self) -> None:
        _check_sparse_updates(self)
        if self.autoencoder and self.objective != "rating":
            raise RecfunnelError(
                "the item autoencoder predicts ratings; use it with objective 'rating' or set "
                "autoencoder=0"
            )


@dataclass(frozen=True)
class MultitaskConfig(Config):
    """Retrieval + rating from shared embeddings (:class:`~recfunnel.models.Multitask`)."""

    rating_weight: float = option(1.0, "weight of the rating loss", min=0.0)
    retrieval_weight: float = option(1.0, "weight of the retrieval loss", min=0.0)
    dim: int = option(32, "embedding dimension", min=1)
    hidden: tuple[int, ...] = option((256, 128), "rating MLP sizes before the output unit", min=1)
    softmax: str = option("in-batch", "retrieval softmax", choices=SOFTMAXES)
    reduction: str = option("sum", "retrieval loss reduction", choices=REDUCTIONS)
    temperature: float = option(1.0, "retrieval softmax temperature", gt=0.0)
    init: str = option("uniform", "embedding initialisation", choices=INITS)
    init_scale: float = option(0.05, "uniform half-width or normal std", gt=0.0)
    trainer: TrainerConfig = trainer()

    def check(self) -> None:
        if self.rating_weight == 0 and self.retrieval_weight == 0:
            raise RecfunnelError("both task weights are 0; give rating_weight or retrieval_weight")


@dataclass(frozen=True)
class TwoStageConfig(Config):
    """Retrieval shortlists, a ranker re-orders them (:class:`~recfunnel.models.TwoStage`)."""

    retrieval: TwoTowerConfig = option(factory=TwoTowerConfig, help="the retrieval stage")
    ranker: RankingConfig = option(
        factory=lambda: RankingConfig(objective="listwise", negatives=10), help="the ranker"
    )
    candidates: int = option(100, "shortlist size per user", min=1)
    blend: float = option(0.5, "weight of the retrieval score in the final score", min=0.0,
                          max=1.0)  # fmt: skip
    hard_negatives: bool = option(True, "draw the ranker's negatives from the shortlists")

    def check(self) -> None:
        if self.ranker.objective == "rating":
            raise RecfunnelError(
                "the two-stage ranker must be trained to recommend; set ranker.objective to "
                "'listwise' or 'watch', not 'rating'"
            )


@dataclass(frozen=True)
class BlendConfig(Config):
    """A weighted blend of member models' standardised scores (:class:`~recfunnel.models.Blend`,
    ``--model auto``'s ensemble)."""

    members: tuple[dict, ...] = option(
        (),
        'the members, each {"model": KIND, "params": {...}} (params: that model\'s options; '
        "default: its defaults)",
    )
    weights: tuple[float, ...] | None = option(None, "one weight per member; none = equal")

    def check(self) -> None:
        from recfunnel.models import model_class

        for member in self.members:
            if set(member) - {"model", "params"} or not isinstance(member.get("model"), str):
                raise RecfunnelError(
                    f'each blend member is {{"model": KIND, "params": {{...}}}}, not {member!r}'
                )
            if member["model"] == "blend":
                raise RecfunnelError("a blend cannot contain a blend; list its members instead")
            model_class(member["model"]).config_class.from_dict(member.get("params") or {})
        if self.weights is not None and len(self.weights) != len(self.members):
            raise RecfunnelError(
                f"blend has {len(self.members)} members but {len(self.weights)} weights; give "
                "one each"
            )


SEQUENCE_ARCHS = ("transformer", "gru")
SEQUENCE_LOSSES = ("softmax", "sampled", "gbce")


@dataclass(frozen=True)
class SequentialConfig(Config):
    """Next-item recommendation from ordered sequences (:class:`~recfunnel.models.Sequential`).
    Early stopping monitors validation ``ndcg@10`` (``trainer.monitor=auto``)."""

    arch: str = option("transformer", "transformer (SASRec) or gru", choices=SEQUENCE_ARCHS)
    dim: int = option(64, "embedding and hidden dimension (divisible by heads)", min=1)
    blocks: int = option(2, "transformer blocks (GRU layers)", min=1)
    heads: int = option(1, "attention heads", min=1)
    dropout: float = option(
        0.2, "dropout on the embeddings, residual branches and feed-forward", min=0.0
    )
    max_len: int = option(200, "the last max_len items of a sequence are read and trained on",
                          min=1)  # fmt: skip
    loss: str = option("softmax", "softmax (full), sampled (logQ-corrected) or gbce",
                       choices=SEQUENCE_LOSSES)  # fmt: skip
    negatives: int = option(256, "sampled negatives per batch (sampled) or sequence (gbce)",
                            min=1)  # fmt: skip
    sampler: str = option("uniform", "sampled: draw negatives uniformly or by popularity",
                          choices=SAMPLERS)  # fmt: skip
    gbce_t: float = option(0.75, "gBCE calibration t", min=0.0, max=1.0)
    max_minutes: float | None = option(
        None,
        "a fit's time budget: no epoch starts that would end past it; none: every epoch",
        gt=0.0,
    )
    trainer: TrainerConfig = trainer(
        optimizer="adamw", learning_rate=3e-3, batch_size=128, epochs=20
    )

    def check(self) -> None:
        if self.dim % self.heads:
            raise RecfunnelError(f"dim ({self.dim}) must be divisible by heads ({self.heads})")
        if not self.dropout < 1.0:
            raise RecfunnelError(f"dropout must lie in [0, 1), not {self.dropout}")
