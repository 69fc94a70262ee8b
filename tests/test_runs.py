import json

import numpy as np
import pytest
import torch

from recfunnel.data import Vocabulary, checkerboard
from recfunnel.errors import ArtifactError, RecfunnelError, UnknownIdError
from recfunnel.models import TwoTower
from recfunnel.runs import Run


@pytest.fixture
def run():
    data = checkerboard(6, 8, seed=0)
    model = TwoTower(dim=4, epochs=2, softmax="full", reduction="mean", optimizer="adam",
                     learning_rate=0.05).fit(data)  # fmt: skip
    users = Vocabulary([f"u{i}" for i in range(6)], name="user")
    items = Vocabulary([f"i{i}" for i in range(8)], name="item")
    # items i0 and i1 share a title: it must never be recommended twice
    titles = ["Same", "Same"] + [f"Film {i}" for i in range(2, 8)]
    return Run(model, users, items, item_titles=titles, config={"data": {}}, metrics={"x": 1.0})


def test_save_load_reproduces_scores_exactly(run, tmp_path):
    run.save(tmp_path / "run")
    loaded = Run.load(tmp_path / "run")
    users = np.arange(6)
    torch.testing.assert_close(loaded.model.score(users), run.model.score(users), rtol=0, atol=0)
    assert loaded.recommend("u1", 3).items == run.recommend("u1", 3).items
    assert loaded.metrics == {"x": 1.0}
    assert not list(tmp_path.glob(".run.*"))  # no temporary folders left behind


def test_no_title_is_recommended_twice(run):
    rec = run.recommend("u0", 7, exclude_seen=False)
    assert len(rec.titles) == len(set(rec.titles)) == 7


def test_unknown_user_gets_flagged_popular_items_or_an_error(run):
    rec = run.recommend("stranger", 2)
    assert rec.cold_start and len(rec.items) == 2
    with pytest.raises(UnknownIdError, match="unknown user 'stranger'"):
        run.recommend("stranger", 2, cold_start=False)
    with pytest.raises(UnknownIdError, match="unknown item 'nope'"):
        run.recommend("u0", 2, filter_items=["nope"])


def test_tampered_or_truncated_weights_are_refused(run, tmp_path):
    path = run.save(tmp_path / "run")
    weights = path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="does not match its checksum"):
        Run.load(path)
    weights.write_bytes(bytes(data[:100]))
    with pytest.raises(ArtifactError, match="truncated or modified"):
        Run.load(path)


def test_unknown_schema_is_refused(run, tmp_path):
    path = run.save(tmp_path / "run")
    config = json.loads((path / "config.json").read_text())
    config["schema_version"] = 99
    (path / "config.json").write_text(json.dumps(config))
    manifest = json.loads((path / "manifest.json").read_text())
    from recfunnel.runs import _sha256

    manifest["config.json"] = _sha256(path / "config.json")
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="version 99"):
        Run.load(path)


def _rewrite_config(path, config):
    from recfunnel.runs import _sha256

    (path / "config.json").write_text(json.dumps(config))
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["config.json"] = _sha256(path / "config.json")
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_a_run_saved_in_the_version_1_layout_still_loads(run, tmp_path):
    # version 1 saved the constructor's flat keyword arguments, "history" for the pooled items
    path = run.save(tmp_path / "run")
    config = json.loads((path / "config.json").read_text())
    assert config["schema_version"] == 2 and config["params"]["trainer"]["epochs"] == 2
    config["schema_version"] = 1
    config["params"] = {
        "dim": 4, "softmax": "full", "reduction": "mean", "history": False, "large": None,
        "max_examples": None, "optimizer": "adam", "learning_rate": 0.05, "epochs": 2,
        "patience": None, "seed": 0,
    }  # fmt: skip
    _rewrite_config(path, config)
    loaded = Run.load(path)
    assert loaded.model.config == run.model.config
    users = np.arange(6)
    torch.testing.assert_close(loaded.model.score(users), run.model.score(users), rtol=0, atol=0)


def test_a_failed_save_leaves_the_existing_run_intact(run, tmp_path, monkeypatch):
    path = run.save(tmp_path / "run")
    before = {p.name: p.read_bytes() for p in path.iterdir()}

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("recfunnel.runs.save_file", boom)
    with pytest.raises(OSError):
        run.save(path)
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_refuses_to_replace_a_folder_that_is_not_a_run(run, tmp_path):
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.tex").write_text("x")
    with pytest.raises(RecfunnelError, match=r"not part of a recfunnel run \(thesis.tex\)"):
        run.save(tmp_path / "precious")
    assert (tmp_path / "precious" / "thesis.tex").read_text() == "x"


def test_anonymous_user_from_history(run):
    rec = run.recommend_history(["i2", "i4"], 3)
    assert len(rec.items) == 3 and not {"i2", "i4"} & set(rec.items)
    with pytest.raises(UnknownIdError, match="unknown item 'zz' in the history"):
        run.recommend_history(["zz"], 3)
    with pytest.raises(RecfunnelError, match="history is empty"):
        run.recommend_history([], 3)


@pytest.mark.parametrize("name", ["x" * 300, "nul\x00byte", "missing"])
def test_a_path_that_cannot_be_a_run_is_refused_with_an_artifact_error(tmp_path, name):
    # a name longer than the file system allows raised a bare OSError (a 500 in the service's
    # reload endpoint, found by the fuzz test)
    with pytest.raises(ArtifactError):
        Run.load(tmp_path / name)
