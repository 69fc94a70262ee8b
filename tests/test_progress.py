import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import recfunnel
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


# ------------------------------------------------------------------------- the heartbeat
class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture(autouse=True)
def no_earlier_lines(monkeypatch):
    """Each test starts as if nothing had been printed yet (lines of earlier tests are not
    on the fake clock's time line)."""
    from recfunnel import progress

    monkeypatch.setattr(progress, "_LAST_LINE", [None])


def test_heartbeat_fills_silences_longer_than_the_interval():
    from recfunnel.progress import Heartbeat

    out, clock = io.StringIO(), FakeClock()
    beat = Heartbeat("train", progress="lines", interval=10.0, stream=out, clock=clock)
    beat.stage("reading the data")
    clock.now += 5.0
    assert not beat.beat()  # 5 s of silence: not yet
    clock.now += 4.0
    assert beat.beat()  # 9 s: before the interval is out
    assert out.getvalue() == "train: reading the data (9s)\n"
    clock.now += 5.0
    assert not beat.beat()  # the line just printed counts as output
    beat.stage("splitting the data")
    clock.now += 9.0
    assert beat.beat()
    assert out.getvalue().splitlines()[-1] == "train: splitting the data (9s)"


def test_heartbeat_stays_quiet_after_a_pass_line_and_names_the_pass(monkeypatch):
    from recfunnel import progress as module
    from recfunnel.progress import Heartbeat

    out, clock = io.StringIO(), FakeClock()
    beat = Heartbeat("train", progress="lines", interval=10.0, stream=out, clock=clock)
    monkeypatch.setattr(module, "_HEARTBEAT", [beat])  # the running one, without its thread
    beat.stage("setting up wals")
    progress = Progress("lines", interval=0.0, stream=out)
    progress.start(100, epoch=1, epochs=2)
    progress.update(10)  # its own line (interval 0: at once) counts as output
    module._LAST_LINE[0] = clock.now  # on the fake clock
    clock.now += 8.5
    assert not beat.beat()
    progress.finish()  # its summary line
    module._LAST_LINE[0] = clock.now
    clock.now += 10.0
    assert beat.beat()  # between passes the heartbeat speaks again, naming the pass
    assert out.getvalue().splitlines()[-1].startswith("train: train epoch 1/2 finished (")


@pytest.mark.parametrize("mode", ["off", "bar"])
def test_no_heartbeat_when_quiet_or_on_a_terminal(mode):
    from recfunnel.progress import Heartbeat

    out, clock = Tty() if mode == "bar" else io.StringIO(), FakeClock()
    beat = Heartbeat("train", progress=mode, interval=10.0, stream=out, clock=clock)
    beat.stage("reading the data")
    clock.now += 60.0
    assert not beat.beat() and out.getvalue() == ""


def test_cli_train_prints_a_line_while_the_data_loads(train_csv, monkeypatch, capsys):
    """Reading the data is held up until the heartbeat thread has printed (no timing)."""
    import threading

    from recfunnel import progress
    from recfunnel.data import sources

    monkeypatch.setenv("RECFUNNEL_PROGRESS_INTERVAL", "0.05")
    real = sources.load_dataset
    printed = threading.Event()

    def slow_load(spec):
        before = progress._LAST_LINE[0]
        for _ in range(2000):  # until the heartbeat's line, at most ~20 s
            if progress._LAST_LINE[0] != before:
                printed.set()
                break
            threading.Event().wait(0.01)
        return real(spec)

    monkeypatch.setattr(sources, "load_dataset", slow_load)
    argv = ["train", "--train", str(train_csv), "--model", "most-popular", "--json"]
    assert main(argv) == 0
    assert printed.is_set()
    err = capsys.readouterr().err.splitlines()
    assert any(re.fullmatch(r"train: reading the data \(\d+s\)", line) for line in err), err


def test_heartbeat_speaks_for_a_pass_whose_updates_come_seldom(monkeypatch):
    from recfunnel import progress as module
    from recfunnel.progress import Heartbeat

    out, clock = io.StringIO(), FakeClock()
    beat = Heartbeat("train", progress="lines", interval=10.0, stream=out, clock=clock)
    monkeypatch.setattr(module, "_HEARTBEAT", [beat])  # the running one, without its thread
    progress = Progress("lines", interval=10.0, stream=out)
    progress.start(100, epoch=1, epochs=2)  # its updates come seldom: none for 10 s
    clock.now += 8.9
    assert not beat.beat()
    clock.now += 0.1
    assert beat.beat()  # 9 s: no silence reaches the interval
    assert out.getvalue().splitlines()[-1] == "train: train epoch 1/2 (9s)"
    progress.close()
    beat.stage(None)
    clock.now += 60.0
    assert not beat.beat()  # nothing to report


# ------------------------------------------------------------- the heartbeat's watcher process
HOLDS_THE_LOCK = """
import sys, time
from recfunnel.progress import Heartbeat, _last_line

with Heartbeat("train", progress="lines", interval=0.3) as heartbeat:
    heartbeat.stage("holding the interpreter lock")
    sys.setswitchinterval(1000.0)  # no other thread of this process runs meanwhile
    end = time.monotonic() + 3.0
    while time.monotonic() < end:
        pass
    sys.setswitchinterval(0.005)
    before = time.monotonic()
    time.sleep(0.5)
    heard = _last_line()
    print("heard", int(heard is not None and heard > before - 1.0), file=sys.stderr)
"""


def test_heartbeat_speaks_while_the_interpreter_lock_is_held():
    """The watcher process prints while this interpreter cannot (a thread would not: it needs
    the lock), and the command hears of the watcher's lines (a pass then waits its turn)."""
    env = dict(os.environ, PYTHONPATH=str(Path(recfunnel.__file__).parents[1]))
    out = subprocess.run([sys.executable, "-c", HOLDS_THE_LOCK], env=env, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    beats = [line for line in lines if line.startswith("train: holding the interpreter lock (")]
    # 3 s of a held lock at a 0.3 s interval: ~10 lines; a thread would print one, afterwards
    assert len(beats) >= 3, lines
    assert "heard 1" in lines


def test_heartbeat_watcher_ends_with_the_command():
    from recfunnel.progress import Heartbeat

    with Heartbeat("train", progress="lines", interval=0.3, stream=sys.__stderr__) as beat:
        watcher = beat._watcher
        assert watcher is not None and watcher.poll() is None
    assert watcher.poll() == 0 and beat._watcher is None


def test_ctrl_c_stops_the_command_not_its_watcher_with_a_traceback():
    """Ctrl-C signals the terminal's whole process group: the watcher ignores it (no
    KeyboardInterrupt traceback of its own) and still ends with the command."""
    from recfunnel.progress import Heartbeat, _last_line

    with Heartbeat("train", progress="lines", interval=0.3, stream=sys.__stderr__) as beat:
        watcher = beat._watcher
        before = time.monotonic()
        beat.stage("waiting for Ctrl-C")
        deadline = before + 60.0
        while (_last_line() or 0.0) < before and time.monotonic() < deadline:
            time.sleep(0.05)  # until its first line: its start-up, the handler included, is done
        assert (_last_line() or 0.0) >= before
        watcher.send_signal(signal.SIGINT)
        time.sleep(0.3)
        assert watcher.poll() is None  # still running
    assert watcher.wait(timeout=10) == 0


def test_no_silence_reaches_the_interval_and_a_pass_goes_first():
    """The heartbeat (watcher or thread) speaks at 9 s of a 10 s interval and looks every
    quarter second: a late wake-up on a loaded machine still stays under 10 s. A pass prints
    at 8.5 s, so while its updates come often its line goes first."""
    from recfunnel.heartbeat_child import due

    assert not due(108.9, 100.0, 10.0)
    assert due(109.0, 100.0, 10.0)
    assert Progress("lines", interval=10.0)._due == 8.5


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="Linux /proc only")
def test_process_started_is_the_start_of_the_process():
    """The command line's silence counts from the process's start: its age is read, not 0."""
    code = ("import time; from recfunnel.progress import process_started; "
            "print(time.monotonic() - process_started())")  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(Path(recfunnel.__file__).parents[1]))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, check=True)  # fmt: skip
    assert 0.0 < float(out.stdout) < 60.0
