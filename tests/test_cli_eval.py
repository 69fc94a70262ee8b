"""``--eval-users`` and ``--eval-memory`` on ``train`` and ``evaluate``."""

import json

import pytest

from recfunnel.cli import main
from recfunnel.runs import Run


def test_a_sample_of_users_is_said_and_recorded(train_csv, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--train", str(train_csv), "--model", "wals", "--epochs", "2", "--dim", "4",
            "--test-fraction", "0.5", "--out", str(out), "--json"]  # fmt: skip
    assert main([*argv, "--eval-users", "5", "--eval-memory", "1KB"]) == 0
    captured = capsys.readouterr()
    assert "seeded sample of 5 of 12 test users" in captured.err
    metrics = json.loads(captured.out)
    assert metrics["num_eval_users"] <= 5
    record = Run.load(out).config["evaluation"]
    assert record == {"users": "sample", "sample_size": 5, "test_users": 12, "seed": 42}

    assert main(["evaluate", str(out), "--json", "--eval-users", "5"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["recall@10"] == pytest.approx(metrics["recall@10"])  # the same seeded sample
    assert main(["evaluate", str(out), "--json", "--eval-users", "all"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["evaluation"]["users"] == "all"
    assert "sample" not in captured.err


@pytest.mark.parametrize(("flag", "value"), [("--eval-users", "some"), ("--eval-memory", "lots")])
def test_bad_evaluation_options_are_one_line(train_csv, capsys, monkeypatch, flag, value):
    from recfunnel import experiment

    monkeypatch.setattr(experiment, "train", lambda *a, **k: pytest.fail("trained anyway"))
    argv = ["train", "--train", str(train_csv), "--model", "most-popular", flag, value]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert flag in err or "512MB" in err
