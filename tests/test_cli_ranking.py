"""The command line with ranking models: feature files, rating metrics, two-stage runs."""

import json

import pytest

from recfunnel.cli import main

RANKING = ["--model", "ranking", "--epochs", "3", "--dim", "8", "--batch-size", "64"]


@pytest.fixture
def files(tmp_path, train_csv):
    train = train_csv
    users = tmp_path / "users.csv"
    users.write_text("user,age,city\n" + "".join(f"user{u},{20 + u},c{u % 3}\n" for u in range(12)))
    items = tmp_path / "items.tsv"
    items.write_text("item\tkind\n" + "".join(f"item{i}\tk{i % 4}\n" for i in range(16)))
    return train, users, items


def base(files, out):
    train, users, items = files
    return ["train", "--train", str(train), "--rating-col", "rating", "--time-col", "ts",
            "--user-features", str(users), "--item-features", str(items),
            "--out", str(out)]  # fmt: skip


def test_ranking_run_reports_rating_metrics_and_reloads(files, tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*base(files, out), *RANKING, "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert {"rmse", "mae", "fit_seconds", "config"} <= set(metrics)
    assert metrics["config"]["features"] is True
    assert main(["evaluate", str(out), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["rmse"] == pytest.approx(metrics["rmse"], abs=1e-6)
    assert main(["recommend", str(out), "--user", "user3", "-k", "3", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 3


def test_two_stage_run_reports_both_stages(files, tmp_path, capsys):
    out = tmp_path / "run"
    small = ['--set', 'retrieval={"dim": 8, "epochs": 2, "batch_size": 64}',
             '--set', 'ranker={"dim": 8, "epochs": 2, "batch_size": 64, "objective": "listwise"}',
             '--set', 'candidates=6']  # fmt: skip
    assert main([*base(files, out), "--model", "two-stage", *small, "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert "retrieval/ndcg@10" in metrics and "ndcg@10" in metrics
    # the two-stage top-K accuracy ranks its unseen shortlist first: named apart from TFRS's
    assert "unseen_first_top_k/top_5_categorical_accuracy" in metrics
    assert not any(k.startswith("factorized_top_k/") for k in metrics)
    assert "retrieval/factorized_top_k/top_5_categorical_accuracy" in metrics
    assert main(["evaluate", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ndcg@10"] == pytest.approx(metrics["ndcg@10"])
    assert main(["recommend", str(out), "--user", "user3", "-k", "4", "--json"]) == 0
    recs = json.loads(capsys.readouterr().out)
    assert len(recs) == 4 and not {r["item"] for r in recs} & {f"item{i}" for i in range(1, 16, 2)}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"users": "missing.csv"}, "user feature file not found"),
        ({"users_text": "id,age\nuser1,3\n"}, "has no 'user' column"),
        ({"items_text": "item\nitem1\n"}, "has no feature columns"),
    ],
)
def test_bad_feature_files_are_one_line_errors(files, tmp_path, capsys, change, message):
    train, users, items = files
    if "users" in change:
        users = tmp_path / change["users"]
    if "users_text" in change:
        users.write_text(change["users_text"])
    if "items_text" in change:
        items.write_text(change["items_text"])
    argv = base((train, users, items), tmp_path / "run")
    assert main([*argv, *RANKING]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
