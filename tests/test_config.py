"""Typed configs: every option refuses a bad value with one line, before any training."""

import dataclasses
import typing

import pytest

from recfunnel.config import Config, TrainerConfig, TwoStageConfig, TwoTowerConfig, WALSConfig
from recfunnel.errors import RecfunnelError
from recfunnel.models import MODELS
from recfunnel.presets import PRESETS, config_toml, read_config


def leaf_options():
    """(model, path, type, field) of every option of every registered model."""
    for kind, cls in sorted(MODELS.items()):
        config = cls.config_class()
        for path, tp, f in config.options():
            yield pytest.param(kind, path, tp, f, id=f"{kind}:{path}")


def bad_values(tp, f) -> list[str]:
    """Command-line strings that must be refused for a field of type ``tp``."""
    base = typing.get_args(tp)[0] if type(None) in typing.get_args(tp) else tp
    meta = f.metadata
    if base is bool:
        return ["maybe", "2"]
    if base is int:
        out = ["abc", "1.5", '"3"']
        if meta.get("min") is not None:
            out.append(str(int(meta["min"]) - 1))
        return out
    if base is float:
        out = ["abc", "nan", "inf"]
        if meta.get("min") is not None:
            out.append(str(meta["min"] - 1))
        if meta.get("gt") is not None:
            out.append(str(meta["gt"]))
        if meta.get("max") is not None:
            out.append(str(meta["max"] + 1))
        return out
    if typing.get_origin(base) is tuple:
        return ["a,b", "0"] if meta.get("min") else ["a,b"]
    if base is str:
        return ["bogus-value"]
    raise AssertionError(f"no bad value for {tp}")


@pytest.mark.parametrize(("kind", "path", "tp", "f"), list(leaf_options()))
def test_every_option_refuses_a_bad_value(kind, path, tp, f):
    if path.endswith("monitor"):  # any metric name is accepted; the trainer checks it
        pytest.skip("free-form metric name")
    config = MODELS[kind].config_class()
    for text in bad_values(tp, f):
        with pytest.raises(RecfunnelError) as info:
            config.with_strings({path: text})
        message = str(info.value)
        assert "\n" not in message and path.split(".")[-1] in message, (text, message)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_presets_round_trip_through_dict_and_toml(kind, tmp_path):
    for name, config in PRESETS[kind].items():
        assert type(config).from_dict(config.to_dict()) == config
        path = tmp_path / f"{name}.toml"
        path.write_text(config_toml(config, model=kind))
        assert read_config(path, kind) == config


def test_a_hand_written_preset_sets_only_what_it_names(tmp_path):
    """A partial [trainer] table keeps the model's other trainer settings (BPR: Adam 0.02,
    linear), as --set does; the generic trainer defaults (Adagrad 0.1) would be wrong."""
    path = tmp_path / "mine.toml"
    path.write_text('model = "bpr"\ndim = 64\n\n[trainer]\nepochs = 5\n')
    config = read_config(path, "bpr")
    assert config == PRESETS["bpr"]["default"].override(dim=64, **{"trainer.epochs": 5})
    assert config.trainer.optimizer == "adam" and config.trainer.lr_schedule == "linear"


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TwoTowerConfig().dim = 3


def test_a_bare_name_sets_every_field_of_that_name_and_a_path_one():
    config = TwoStageConfig().override(epochs=7)
    assert config.retrieval.trainer.epochs == 7 and config.ranker.trainer.epochs == 7
    config = TwoStageConfig().with_strings({"retrieval.epochs": "3", "ranker.hidden": "16,8"})
    assert config.retrieval.trainer.epochs == 3 and config.ranker.trainer.epochs == 20
    assert config.ranker.hidden == (16, 8)
    config = TwoStageConfig().with_strings({"retrieval": '{"dim": 8, "epochs": 2}'})
    assert config.retrieval.dim == 8 and config.retrieval.trainer.epochs == 2


def test_cross_field_checks_see_all_changes_at_once():
    ranker = PRESETS["ranking"]["default"].override(objective="listwise", autoencoder=0)
    assert ranker.objective == "listwise"
    with pytest.raises(RecfunnelError, match="autoencoder predicts ratings"):
        PRESETS["ranking"]["default"].override(objective="listwise")
    with pytest.raises(RecfunnelError, match="two-stage ranker must be trained to recommend"):
        TwoStageConfig().with_strings({"ranker.objective": "rating"})


def test_closed_form_models_refuse_gradient_settings():
    with pytest.raises(RecfunnelError, match="no option 'learning_rate'"):
        WALSConfig().override(learning_rate=0.1)
    assert "trainer.batch_size" not in WALSConfig().paths()


def test_unknown_keys_in_a_saved_config_are_refused():
    with pytest.raises(RecfunnelError, match="no option 'colour'"):
        TwoTowerConfig.from_dict({"colour": "red"})
    with pytest.raises(RecfunnelError, match="dim must be an integer"):
        TwoTowerConfig.from_dict({"dim": "32"})


def test_renamed_options_still_read():
    assert TwoTowerConfig.from_dict({"history": True}).pool_seen_items is True


def test_every_field_has_help():
    def walk(cls):
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"

    for cls in {m.config_class for m in MODELS.values()} | {TrainerConfig}:
        walk(cls)
    assert issubclass(TwoTowerConfig, Config)
