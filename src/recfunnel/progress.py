"""Progress of long loops (training epochs, evaluation): bars on a terminal, lines in logs.

    progress = make_progress(True, desc="train")
    for epoch in range(epochs):
        progress.start(rows, epoch=epoch + 1, epochs=epochs)
        for batch in batches:
            ...
            progress.update(len(batch), loss=loss)
        progress.finish(loss=total)
    progress.close()

Modes:

* ``"bar"``: a tqdm bar per pass on stderr (rows/s, ETA, the latest loss).
* ``"lines"``: one plain line on stderr about every ``interval`` seconds (10 by default; at
  85% of it, so it comes before a heartbeat's), in a pass or at its end (a summary), so work
  that ends sooner prints nothing, e.g.
  ``train epoch 2/5 rows 491520/4000000 (12.3%) 40960 rows/s loss 3.214 eta 1m28s``:
  readable in a log file, a CI job or behind ``--json``, where a bar would be one endless
  line of carriage returns.
* ``"off"``: nothing.

``make_progress(True)`` (``"auto"``) picks ``bar`` when stderr is a terminal, else ``lines``;
``False`` is ``off``.

Between passes (reading and splitting the data, a model's set-up, saving), and in a pass
whose updates come too seldom, a :class:`Heartbeat` fills the silence in ``lines`` mode:
at 90% of ``interval`` seconds with no line, one line says what is running, e.g.
``train: reading the data (20s)``; :func:`stage` names what runs next.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

from recfunnel.errors import RecfunnelError
from recfunnel.heartbeat_child import PASS_AT, due, duration

MODES = ("auto", "bar", "lines", "off")

#: when the last line of any kind was printed (time.monotonic)
_LAST_LINE: list[float | None] = [None]
#: the heartbeat of the running command, if any (see :func:`stage`)
_HEARTBEAT: list[Heartbeat | None] = [None]


def _value(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class Progress:
    """Progress of passes over ``total`` units (see the module docstring).

    Args:
        mode: ``"bar"``, ``"lines"`` or ``"off"`` (``"auto"``: bar on a terminal, else lines).
        desc: what is running (``train``, ``evaluate``, ...), the first word of every line.
        unit: what ``update`` counts (``rows``, ``users``).
        interval: seconds between lines in ``lines`` mode (default: 10, or
            ``$RECFUNNEL_PROGRESS_INTERVAL``).
        stream: where to write (stderr by default).
    """

    def __init__(
        self,
        mode: str = "auto",
        *,
        desc: str = "train",
        unit: str = "rows",
        interval: float | None = None,
        stream: TextIO | None = None,
    ) -> None:
        if mode not in MODES:
            raise RecfunnelError(f"progress must be one of {', '.join(MODES)}, not {mode!r}")
        self.stream = stream if stream is not None else sys.stderr
        if mode == "auto":
            isatty = getattr(self.stream, "isatty", None)
            mode = "bar" if isatty is not None and isatty() else "lines"
        self.mode = mode
        self.desc = desc
        self.unit = unit
        if interval is None:
            interval = float(os.environ.get("RECFUNNEL_PROGRESS_INTERVAL", 10.0))
        self.interval = interval
        # a little early, and before a heartbeat would (see heartbeat_child.PASS_AT)
        self._due = PASS_AT * interval
        self._bar = None
        self._total = self._done = self._steps = 0
        self._epoch = self._epochs = None
        self._started = 0.0
        self._last: float | None = None  # when the last line was printed (or the first pass began)
        self._postfix: dict = {}

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def start(self, total: int, *, epoch: int | None = None, epochs: int | None = None) -> None:
        """Begin a pass of ``total`` units (epoch ``epoch`` of ``epochs``, when it is one)."""
        self._total, self._done, self._steps = int(total), 0, 0
        self._epoch, self._epochs = epoch, epochs
        self._postfix = {}
        self._started = time.monotonic()
        if self._last is None:
            self._last = self._started
        if self.mode == "lines":
            stage(self._label())
        if self.mode == "bar":
            from tqdm.auto import tqdm

            label = self.desc if epoch is None else f"{self.desc} {epoch}/{epochs or '?'}"
            self._bar = tqdm(
                total=self._total, desc=label, unit=self.unit, unit_scale=True, leave=False,
                file=self.stream, dynamic_ncols=True,
            )  # fmt: skip

    def update(self, n: int = 1, **postfix) -> None:
        """``n`` more units done; ``postfix`` (e.g. ``loss=3.2``) is shown beside the count."""
        if self.mode == "off":
            return
        self._done += n
        self._steps += 1
        if postfix:
            self._postfix.update(postfix)
        if self._bar is not None:
            if postfix:
                self._bar.set_postfix({k: _value(v) for k, v in postfix.items()}, refresh=False)
            self._bar.update(n)
        elif self.mode == "lines":
            now = time.monotonic()
            if now - max(self._last, _last_line() or self._last) >= self._due:
                self._last = now
                self._line(now)

    def finish(self, **postfix) -> None:
        """End the pass; in ``lines`` mode print its summary line if ``interval`` seconds have
        passed since the last line."""
        if self.mode == "off":
            return
        self._postfix.update(postfix)
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.mode == "lines":
            stage(f"{self._label()} finished")  # what a heartbeat says until the next pass
            now = time.monotonic()
            if now - max(self._last, _last_line() or self._last) >= self._due:
                self._last = now
                self._line(now, done=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _label(self) -> str:
        if self._epoch is None:
            return self.desc
        return f"{self.desc} epoch {self._epoch}/{self._epochs or '?'}"

    def _line(self, now: float, done: bool = False) -> None:
        elapsed = max(now - self._started, 1e-9)
        rate = self._done / elapsed
        parts = [self.desc]
        if self._epoch is not None:
            parts.append(f"epoch {self._epoch}/{self._epochs or '?'}")
        if self._total:
            share = 100.0 * self._done / self._total
            parts.append(f"{self.unit} {self._done}/{self._total} ({share:.1f}%)")
        else:
            parts.append(f"{self.unit} {self._done}")
        parts.append(f"{rate:.0f} {self.unit}/s")
        parts.extend(f"{k} {_value(v)}" for k, v in self._postfix.items())
        if done:
            parts.append(f"done in {duration(elapsed)}")
        elif self._total and rate > 0:
            parts.append(f"eta {duration((self._total - self._done) / rate)}")
        print(" ".join(parts), file=self.stream, flush=True)
        _printed(now)


def make_progress(progress: bool | str | Progress | None, **kwargs) -> Progress:
    """A :class:`Progress` from a flag: ``True``/``"auto"``, ``False``/``None`` (off), a mode
    name, or an existing instance (returned as is)."""
    if isinstance(progress, Progress):
        return progress
    if progress is None or progress is False:
        return Progress("off", **kwargs)
    if progress is True:
        return Progress("auto", **kwargs)
    return Progress(str(progress), **kwargs)


class Heartbeat:
    """A line on stderr before a command has printed nothing for ``interval`` seconds (at
    90% of it; a pass, :class:`Progress`, prints its own line at 85%, so while its updates
    come often it goes first): what runs and for how long, e.g.
    ``train: reading the data (20s)``. Only in ``lines`` mode.

        with Heartbeat("train", progress=True):
            stage("reading the data")
            ...

    The clock runs in a watcher process (:mod:`recfunnel.heartbeat_child`) writing to the
    same stderr, so the line comes on time even while this interpreter's lock is held for
    seconds (importing torch, reading a Parquet column). Where the stream is not a file (a
    test's buffer) or a fake ``clock`` is given, a thread checks every ``interval / 4``
    seconds (at most 0.25 s) instead, by the same rule.

    Args:
        desc: the command, the first word of every line.
        progress: as :func:`make_progress` takes it (``True``: lines unless on a terminal).
        interval: seconds of silence before a line (default: 10, or
            ``$RECFUNNEL_PROGRESS_INTERVAL``); 0 or less turns the heartbeat off.
        clock: the time source (``time.monotonic``; tests pass a fake one).
        started: when the silence began, on ``clock`` (default: now; the command line passes
            :func:`process_started`, so the first line comes ``interval`` after the process
            started, the interpreter's own start-up included).
    """

    def __init__(
        self,
        desc: str = "train",
        *,
        progress: bool | str = True,
        interval: float | None = None,
        stream: TextIO | None = None,
        clock=time.monotonic,
        started: float | None = None,
    ) -> None:
        mode = make_progress(progress, stream=stream, interval=interval)
        self.enabled = mode.mode == "lines" and mode.interval > 0
        self.desc, self.interval, self.stream, self.clock = desc, mode.interval, mode.stream, clock
        self.period = min(0.25, self.interval / 4)
        self._stage: str | None = None
        self._stage_started = self._started = clock() if started is None else started
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watcher: subprocess.Popen | None = None
        self._heard = b""  # an unfinished report of the watcher's

    def stage(self, name: str | None, since: float | None = None) -> None:
        """What runs from now on, or from ``since`` (``None``: nothing to report; the
        heartbeat keeps quiet)."""
        self._stage, self._stage_started = name, self.clock() if since is None else since
        if name is not None:
            name = " ".join(name.split())  # one line
        self._tell(f"s {self._stage_started!r} {name or ''}")

    def beat(self) -> bool:
        """Print the line if it is due (by :func:`~recfunnel.heartbeat_child.due`); whether it
        was. The thread's check; the watcher process applies the same rule."""
        if not self.enabled or self._stage is None:
            return False
        now = self.clock()
        if not due(now, max(self._started, _LAST_LINE[0] or self._started), self.interval):
            return False
        print(f"{self.desc}: {self._stage} ({duration(now - self._stage_started)})",
              file=self.stream, flush=True)  # fmt: skip
        _LAST_LINE[0] = now
        return True

    # -- the watcher process
    def _start_watcher(self) -> bool:
        if self.clock is not time.monotonic or not sys.executable:
            return False
        try:
            fd = self.stream.fileno()
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            return False  # not a file: a test's buffer
        script = Path(__file__).with_name("heartbeat_child.py")
        try:
            self._watcher = subprocess.Popen(
                [sys.executable, "-I", "-S", str(script), self.desc, repr(self.interval),
                 repr(self._started)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=fd,
            )  # fmt: skip
        except OSError:
            return False
        os.set_blocking(self._watcher.stdout.fileno(), False)
        if self._stage is not None:
            self._tell(f"s {self._stage_started!r} {' '.join(self._stage.split())}")
        if _LAST_LINE[0] is not None:
            self._tell(f"l {_LAST_LINE[0]!r}")
        return True

    def _tell(self, message: str) -> None:
        watcher = self._watcher
        if watcher is None:
            return
        try:
            watcher.stdin.write(message.encode() + b"\n")
            watcher.stdin.flush()
        except (OSError, ValueError):  # the watcher died: the command goes on without it
            self._watcher = None

    def _listen(self) -> None:
        """Take in the times of the lines the watcher printed."""
        watcher = self._watcher
        if watcher is None:
            return
        with contextlib.suppress(BlockingIOError, OSError, ValueError):
            while chunk := os.read(watcher.stdout.fileno(), 4096):
                self._heard += chunk
        *times, self._heard = self._heard.split(b"\n")
        if times:
            last = max(float(t) for t in times)
            _LAST_LINE[0] = max(last, _LAST_LINE[0] or last)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self.beat()

    def __enter__(self) -> Heartbeat:
        _HEARTBEAT[0] = self
        if self.enabled and not self._start_watcher():
            self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            with contextlib.suppress(OSError, ValueError):
                watcher.stdin.close()  # the watcher's signal to end
            try:
                watcher.wait(timeout=5)
            except subprocess.TimeoutExpired:
                watcher.kill()
                watcher.wait()
            watcher.stdout.close()
        if _HEARTBEAT[0] is self:
            _HEARTBEAT[0] = None


def process_started() -> float:
    """When this process started, on ``time.monotonic``'s clock (Linux: from
    ``/proc/self/stat``; elsewhere, or if that cannot be read: now)."""
    now = time.monotonic()
    try:
        with open("/proc/self/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22, starttime: clock ticks after boot
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return now
    return now - min(max(age, 0.0), 60.0)  # a sane age: a process still starting


def _last_line() -> float | None:
    """When the last line of any kind was printed (the watcher's included)."""
    heartbeat = _HEARTBEAT[0]
    if heartbeat is not None:
        heartbeat._listen()
    return _LAST_LINE[0]


def _printed(now: float) -> None:
    """A pass printed a line at ``now``."""
    _LAST_LINE[0] = now
    heartbeat = _HEARTBEAT[0]
    if heartbeat is not None:
        heartbeat._tell(f"l {now!r}")


def running_heartbeat() -> Heartbeat | None:
    """The heartbeat of the running command, if any."""
    return _HEARTBEAT[0]


def stage(name: str) -> None:
    """Name what the running command does next, for its :class:`Heartbeat` (if any)."""
    heartbeat = _HEARTBEAT[0]
    if heartbeat is not None:
        heartbeat.stage(name)
