"""End to end on the real MovieLens 100k (skipped with a reason when the data is absent)."""

import json

import pytest

from recfunnel.cli import main


@pytest.fixture(scope="module")
def seed_run(ml100k, tmp_path_factory):
    out = tmp_path_factory.mktemp("ml") / "seed"
    argv = ["train", "--data-dir", str(ml100k), "--preset", "seed", "--out", str(out), "--json"]
    return out, argv


def test_tutorial_pipeline_end_to_end(seed_run, capsys):
    out, argv = seed_run
    assert main(argv) == 0
    metrics = json.loads(capsys.readouterr().out)
    top100 = metrics["factorized_top_k/top_100_categorical_accuracy"]
    assert 0.0 < top100 <= 1.0
    assert metrics["config"]["trainer"]["batch_size"] == 8192
    assert main(["recommend", str(out), "--user", "9", "-k", "3", "--json"]) == 0
    recs = json.loads(capsys.readouterr().out)
    titles = [r["title"] for r in recs]
    assert len(titles) == 3 == len(set(titles))


def test_default_preset_beats_most_popular(ml100k, tmp_path, capsys):
    base = ["train", "--data-dir", str(ml100k), "--json"]
    assert main([*base, "--model", "most-popular"]) == 0
    popular = json.loads(capsys.readouterr().out)
    assert main([*base, "--preset", "default", "--out", str(tmp_path / "d")]) == 0
    tuned = json.loads(capsys.readouterr().out)
    assert tuned["recall@10"] > popular["recall@10"]
    assert tuned["ndcg@10"] > popular["ndcg@10"]


def test_predefined_fold_and_id_keys(ml100k, capsys):
    argv = ["train", "--data-dir", str(ml100k), "--split", "u1", "--item-key", "id",
            "--model", "most-popular", "--json"]  # fmt: skip
    assert main(argv) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["num_test_rows"] == 20000
