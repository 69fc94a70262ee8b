import io
import re

import pytest

from recfunnel.cli import main
from recfunnel.data import Interactions
from recfunnel.errors import RecfunnelError
from recfunnel.progress import Progress, make_progress
from recfunnel.training import Trainer, TrainerConfig


class ClosedForm:
    def fit_epoch(self):
        return 1.0


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_lines_name_epoch_rows_rate_loss_and_eta():
    out = io.StringIO()
    progress = Progress("lines", interval=0.0, stream=out)
    progress.start(100, epoch=2, epochs=5)
    progress.update(40, loss=3.25)
    progress.finish(loss=7.5)
    first, last = out.getvalue().splitlines()
    assert re.fullmatch(
        r"train epoch 2/5 rows 40/100 \(40\.0%\) \d+ rows/s loss 3\.25 eta \d+s", first
    )
    assert re.fullmatch(
        r"train epoch 2/5 rows 40/100 \(40\.0%\) \d+ rows/s loss 7\.5 done in \d+s", last
    )


def test_lines_are_throttled_to_the_interval():
    out = io.StringIO()
    progress = Progress("lines", interval=3600.0, stream=out)
    progress.start(10)
    for _ in range(10):
        progress.update(1, loss=1.0)
    progress.finish()
    assert out.getvalue() == ""


def test_auto_is_a_bar_on_a_terminal_and_lines_elsewhere():
    assert Progress("auto", stream=Tty()).mode == "bar"
    assert Progress("auto", stream=io.StringIO()).mode == "lines"
    assert make_progress(False).mode == "off"
    assert make_progress(True, stream=io.StringIO()).mode == "lines"
    with pytest.raises(RecfunnelError, match="progress must be one of"):
        Progress("loud")


def test_bar_shows_rows_per_second():
    out = Tty()
    progress = Progress("bar", stream=out)
    progress.start(1000, epoch=1, epochs=1)
    progress.update(500, loss=2.0)
    progress.finish()
    assert "train 1/1" in out.getvalue()


def test_off_prints_nothing():
    out = io.StringIO()
    progress = Progress("off", stream=out)
    progress.start(10)
    progress.update(5, loss=1.0)
    progress.finish(loss=1.0)
    assert out.getvalue() == ""


def test_trainer_reports_every_epoch(monkeypatch, capsys):
    monkeypatch.setenv("RECFUNNEL_PROGRESS_INTERVAL", "0")
    Trainer(TrainerConfig(epochs=2), progress="lines").fit(
        ClosedForm(), Interactions([0], [0], 1, 1)
    )
    lines = capsys.readouterr().err.splitlines()
    assert [line.split()[:3] for line in lines] == [
        ["train", "epoch", "1/2"],
        ["train", "epoch", "2/2"],
    ]


def test_cli_train_prints_lines_when_piped_and_quiet_silences(train_csv, monkeypatch, capsys):
    monkeypatch.setenv("RECFUNNEL_PROGRESS_INTERVAL", "0")
    argv = ["train", "--train", str(train_csv), "--model", "two-tower", "--preset", "seed",
            "--epochs", "2", "--json"]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err.splitlines()
    assert any(line.startswith("train epoch 2/2 rows") and "rows/s" in line for line in err)
    assert main([*argv, "--quiet"]) == 0
    assert "train epoch" not in capsys.readouterr().err


@pytest.mark.parametrize("solver", ["cg", "cholesky"])
def test_wals_reports_rows_solved_inside_an_iteration(monkeypatch, capsys, solver):
    from recfunnel.data.synthetic import power_law
    from recfunnel.models import WALS, als

    monkeypatch.setenv("RECFUNNEL_PROGRESS_INTERVAL", "0")
    monkeypatch.setattr(als, "PROGRESS_CELLS", 100)  # several kernel calls per half step
    data = power_law(60, 40, 600, seed=1)
    WALS(dim=4, epochs=1, solver=solver).fit(data, progress="lines")
    counts = [re.search(r"rows (\d+)/(\d+)", line).groups()
              for line in capsys.readouterr().err.splitlines()]  # fmt: skip
    done = [int(d) for d, _ in counts]
    assert {int(t) for _, t in counts} == {100}  # 60 users + 40 items per iteration
    assert done == sorted(done) and done[-1] == 100 and len(done) >= 3


def test_a_budget_of_examples_is_the_total_progress_counts_to(monkeypatch, capsys):
    from recfunnel.data.synthetic import power_law
    from recfunnel.models import TwoTower

    monkeypatch.setenv("RECFUNNEL_PROGRESS_INTERVAL", "0")
    data = power_law(60, 40, 600, seed=1)
    TwoTower(dim=4, epochs=3, batch_size=64, max_examples=700, softmax="in-batch").fit(
        data, progress="lines"
    )
    totals = {re.search(r"rows \d+/(\d+)", line).group(1)
              for line in capsys.readouterr().err.splitlines()}  # fmt: skip
    assert totals == {str(len(data)), str(700 - len(data))}  # the last epoch stops at 700
