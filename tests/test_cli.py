"""The command line, called with argv (no subprocess), on small files and on bad input."""

import csv
import json

import pytest

from recfunnel.cli import main

FAST = ["--model", "two-tower", "--epochs", "3", "--dim", "8", "--batch-size", "64"]


@pytest.fixture
def files(tmp_path, train_csv):
    train = train_csv
    test = tmp_path / "test.csv"
    test.write_text("user,item,rating,ts\nuser0,item0,5,1\nuser1,item1,4,2\n")
    return train, test


def train_args(files, out):
    train, _ = files
    return ["train", "--train", str(train), "--user-col", "user", "--item-col", "item",
            "--rating-col", "rating", "--time-col", "ts", "--out", str(out), *FAST]  # fmt: skip


def test_train_evaluate_recommend_round_trip(files, tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*train_args(files, out), "--test", str(files[1]), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert "factorized_top_k/top_1_categorical_accuracy" in metrics
    assert metrics["config"]["dim"] == 8 and metrics["config"]["trainer"]["epochs"] == 3
    assert metrics["fit_seconds"] > 0

    assert main(["evaluate", str(out), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["recall@10"] == pytest.approx(metrics["recall@10"])

    assert main(["evaluate", str(out), "--test", str(files[1]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_test_rows"] == 2
    assert again["num_test_rows"] == 2

    assert main(["recommend", str(out), "--user", "user3", "-k", "3", "--json"]) == 0
    recs = json.loads(capsys.readouterr().out)
    assert len(recs) == 3 and {"item", "score"} <= set(recs[0])

    export = tmp_path / "recs.csv"
    assert main(["recommend", str(out), "--all-users", "-k", "4", "--output", str(export)]) == 0
    with export.open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["user", "rank", "item", "score"]
    assert len(rows) == 12 * 4
    seen = {(line.split(",")[0], line.split(",")[1])
            for line in files[0].read_text().splitlines()[1:]}  # fmt: skip
    assert not any((r["user"], r["item"]) in seen for r in rows)
    per_user = {}
    for r in rows:
        per_user.setdefault(r["user"], []).append(r["item"])
    assert all(len(v) == len(set(v)) for v in per_user.values())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--train", "missing.csv"], "file not found: missing.csv"),
        (["train", "--train", "{train}", "--user-col", "nope"], "column 'nope' (user) is not in"),
        (["train", "--train", "{train}", "--rating-col", "user"], "is not a number"),
        (["train", "--test", "{test}"], "--test needs --train"),
        (["train", "--train", "{train}", "--epochs", "0"], "epochs must be at least 1"),
        (["train", "--train", "{train}", "--set", "colour=red"], "has no option 'colour'"),
        (["train", "--train", "{train}", "--set", "reduction=none"], "reduction must be one of"),
        (["train", "--train", "{train}", "--set", 'dim="abc"'], "dim expects an integer"),
        (["train", "--train", "{train}", "--set", "seed=abc"], "seed expects an integer"),
        (["train", "--train", "{train}", "--device", "bogus"], "device must be one of"),
        (["train", "--train", "{train}", "--dim", "1000000000"], "lower --dim"),
        (
            ["train", "--train", "{train}", "--model", "wals", "--learning-rate", "0.1"],
            "--learning-rate does not apply to --model wals",
        ),
        (
            ["train", "--train", "{train}", "--model", "most-popular", "--epochs", "2"],
            "--epochs does not apply to --model most-popular",
        ),
        (["recommend", "{run}", "--user", "user1", "-k", "0"], "k must be at least 1"),
        (["recommend", "{run}", "--user", "user1", "-k", "999"], "larger than the catalogue"),
        (["recommend", "{run}", "--all-users"], "--all-users needs --output"),
        (["recommend", "{tmp}", "--user", "1"], "not a recfunnel run folder"),
        (["evaluate", "{run}", "--test", "{empty}"], "has no rows"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(files, tmp_path, capsys, argv, message):
    run = tmp_path / "run"
    assert main(train_args(files, run)) == 0
    empty = tmp_path / "empty.csv"
    empty.write_text("user,item,rating,ts\n")
    names = {"train": files[0], "test": files[1], "run": run, "tmp": tmp_path, "empty": empty}
    argv = [a.format(**names) for a in argv]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_temporal_split_from_the_command_line(files, tmp_path, capsys):
    assert main([*train_args(files, tmp_path / "t"), "--split", "temporal", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_test_rows"] == 12  # one per user


def test_early_stopping_on_a_validation_split(files, tmp_path, capsys):
    argv = [*train_args(files, tmp_path / "e"), "--epochs", "30", "--patience", "2",
            "--validation-fraction", "0.2", "--json"]  # fmt: skip
    assert main(argv) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["config"]["trainer"]["patience"] == 2
    assert main([*train_args(files, tmp_path / "f"), "--patience", "2"]) == 2
    assert "--validation-fraction" in capsys.readouterr().err


def test_failed_train_keeps_the_existing_run(files, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(train_args(files, run)) == 0
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    assert main([*train_args(files, run), "--set", "softmax=bogus"]) == 2
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_unknown_user_is_a_flagged_cold_start(files, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(train_args(files, run)) == 0
    capsys.readouterr()
    assert main(["recommend", str(run), "--user", "newcomer", "-k", "2"]) == 0
    captured = capsys.readouterr()
    assert "cold start" in captured.err
    assert len(captured.out.strip().splitlines()) == 2


# ------------------------------------------------------------ matrix factorization (#3)
MF = {
    "wals": ["--model", "wals", "--dim", "4", "--epochs", "3", "--regularization", "0.1",
             "--alpha", "2"],
    "sgd-mf": ["--model", "sgd-mf", "--dim", "4", "--epochs", "2", "--batch-size", "64"],
    "bpr": ["--model", "bpr", "--dim", "4", "--epochs", "2", "--batch-size", "64"],
}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(MF))
def test_train_mf_models_from_the_command_line(files, tmp_path, capsys, kind):
    train, test = files
    argv = ["train", "--train", str(train), "--rating-col", "rating", "--test", str(test),
            "--json", "--out", str(tmp_path / kind), *MF[kind]]  # fmt: skip
    assert main(argv) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["config"]["dim"] == 4
    if kind == "wals":
        assert metrics["config"]["regularization"] == 0.1 and metrics["config"]["alpha"] == 2
    assert ("rmse" in metrics) == (kind == "sgd-mf")


def test_recommend_from_a_history(files, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--train", str(files[0]), "--out", str(run), *MF["wals"]]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["recommend", str(run), "--history", "item0,item2", "-k", "3", "--json"]) == 0
    recs = json.loads(capsys.readouterr().out)
    assert len(recs) == 3 and not {"item0", "item2"} & {r["item"] for r in recs}
    assert main(["recommend", str(run), "--history", "item0,nope", "-k", "3"]) == 2
    assert "nope" in capsys.readouterr().err


def test_sgd_mf_without_ratings_is_a_clear_error(files, capsys):
    assert main(["train", "--train", str(files[0]), *MF["sgd-mf"]]) == 2
    assert "sgd-mf needs ratings" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".npz"])
def test_synth_writes_a_file(tmp_path, capsys, suffix):
    out = tmp_path / f"synth{suffix}"
    argv = ["synth", "--users", "50", "--items", "30", "--interactions", "200", "--out", str(out)]
    assert main(argv) == 0
    assert out.is_file() and not list(tmp_path.glob(".synth*"))
    if suffix == ".csv":
        lines = out.read_text().splitlines()
        assert lines[0] == "user,item" and 150 < len(lines) - 1 <= 200
