"""The sequential model end to end through the command line (argv, no subprocess)."""

import json

import numpy as np
import pytest

from recfunnel.cli import main
from recfunnel.runs import Run

FAST = ["--model", "sequential", "--dim", "16", "--epochs", "40", "--batch-size", "16",
        "--learning-rate", "0.01", "--device", "cpu", "--quiet",
        "--set", "blocks=1", "--set", "max_len=8", "--set", "dropout=0"]  # fmt: skip


def walks(num_users=40, num_items=10, length=8, seed=0):
    """Users walking the items in a cycle: the next item is always (last + 1) % num_items."""
    rng = np.random.default_rng(seed)
    for _ in range(num_users):
        start = int(rng.integers(num_items))
        yield [f"i{(start + step) % num_items}" for step in range(length)]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("seq")
    rows = ["user,item,ts"]
    for user, items in enumerate(walks()):
        # the file is shuffled within each user: only the time column gives the order
        for step in np.random.default_rng(user).permutation(len(items)):
            rows.append(f"u{user},{items[step]},{100 + step}")
    (folder / "walks.csv").write_text("\n".join(rows) + "\n")
    out = folder / "run"
    code = main(["train", "--train", str(folder / "walks.csv"), "--time-col", "ts",
                 "--split", "last", "--out", str(out), "--json", *FAST])  # fmt: skip
    assert code == 0
    return out


def test_train_on_a_timed_file_with_the_last_item_held_out(run_dir, capsys):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["num_eval_users"] == 40
    assert metrics["hit_rate@5"] == 1.0  # every user's last item follows from the order
    assert main(["evaluate", str(run_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ndcg@10"] == pytest.approx(metrics["ndcg@10"])


def test_recommend_reads_the_history_in_order(run_dir, capsys):
    answers = []
    for history in ("i3,i4,i5", "i5,i4,i3"):
        assert main(["recommend", str(run_dir), "--history", history, "-k", "1", "--json",
                     "--include-seen"]) == 0  # fmt: skip
        answers.append(json.loads(capsys.readouterr().out)[0]["item"])
    assert answers == ["i6", "i4"]


def test_recommend_a_user_continues_their_sequence(run_dir):
    run = Run.load(run_dir)
    walk = list(walks())[7]
    # the run's sequences hold every training item (the last one, the test, was held out)
    assert run.items.decode(run.model.sequence(run.users.index("u7"))) == walk[:-1]
    assert run.recommend("u7", 1, exclude_seen=False).items == [walk[-1]]


def test_sequence_file_with_a_validation_item_before_the_test(tmp_path, capsys):
    lines = [" ".join(items) for items in walks()]
    (tmp_path / "seqs.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    args = ["--split", "last", "--validation-fraction", "0.1", "--out", str(out), *FAST]
    assert main(["train", "--sequences", str(tmp_path / "seqs.txt"), *args]) == 0
    history = json.loads((out / "metrics.json").read_text())["training_log"]
    assert len(history) == 40 and "ndcg@10" in history[0]
    run = Run.load(out)
    first = list(walks())[0]
    # validated on the item before the last, then continued with it: the test query is whole
    assert run.items.decode(run.model.sequence(0)) == first[:-1]


def test_the_sasrec_protocol_and_its_errors(tmp_path, capsys):
    walk = list(walks())
    for part in ("train", "val"):
        (tmp_path / part).mkdir()
    (tmp_path / "train" / "input.txt").write_text("\n".join(" ".join(w[:-2]) for w in walk))
    (tmp_path / "val" / "input.txt").write_text("\n".join(" ".join(w[:-1]) for w in walk[:10]))
    (tmp_path / "val" / "output.txt").write_text("\n".join(w[-1] for w in walk[:10]))
    assert main(["train", "--sequences", str(tmp_path), "--json", *FAST]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["num_eval_users"] == 10 and metrics["hit_rate@5"] == 1.0
    assert main(["train", "--sequences", str(tmp_path), "--split", "last", *FAST]) == 2
    assert "its own protocol" in capsys.readouterr().err
    assert main(["train", "--sequences", str(tmp_path / "train" / "input.txt"),
                 "--split", "sasrec", *FAST]) == 2  # fmt: skip
    assert "needs a folder" in capsys.readouterr().err
