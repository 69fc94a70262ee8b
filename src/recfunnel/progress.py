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
* ``"lines"``: one plain line on stderr every ``interval`` seconds (10 by default), in a
  pass or at its end (a summary), so work that ends sooner prints nothing, e.g.
  ``train epoch 2/5 rows 491520/4000000 (12.3%) 40960 rows/s loss 3.214 eta 1m28s``:
  readable in a log file, a CI job or behind ``--json``, where a bar would be one endless
  line of carriage returns.
* ``"off"``: nothing.

``make_progress(True)`` (``"auto"``) picks ``bar`` when stderr is a terminal, else ``lines``;
``False`` is ``off``.

Between passes (reading and splitting the data, a model's set-up, saving) a
:class:`Heartbeat` fills the silence in ``lines`` mode: whenever no pass is printing and no
line has been printed for ``interval`` seconds, one line says what is running, e.g.
``train: reading the data (20s)``; :func:`stage` names what runs next.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
import weakref
from typing import TextIO

from recfunnel.errors import RecfunnelError

MODES = ("auto", "bar", "lines", "off")

#: passes printing their own lines now (a heartbeat keeps quiet meanwhile), and when the last
#: line of any kind was printed (time.monotonic)
_PRINTING: weakref.WeakSet = weakref.WeakSet()
_LAST_LINE: list[float | None] = [None]
#: the heartbeat of the running command, if any (see :func:`stage`)
_HEARTBEAT: list[Heartbeat | None] = [None]


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


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
            _PRINTING.add(self)
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
            if now - max(self._last, _LAST_LINE[0] or self._last) >= self.interval:
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
            _PRINTING.discard(self)
            stage(f"{self._label()} finished")  # what a heartbeat says until the next pass
            now = time.monotonic()
            if now - max(self._last, _LAST_LINE[0] or self._last) >= self.interval:
                self._last = now
                self._line(now, done=True)

    def close(self) -> None:
        _PRINTING.discard(self)
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
            parts.append(f"done in {_duration(elapsed)}")
        elif self._total and rate > 0:
            parts.append(f"eta {_duration((self._total - self._done) / rate)}")
        print(" ".join(parts), file=self.stream, flush=True)
        _LAST_LINE[0] = now


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
    """A line on stderr whenever a command has printed nothing for ``interval`` seconds and
    no pass (:class:`Progress`) is printing its own (or that pass is late): what runs and for
    how long, e.g. ``train: reading the data (20s)``. Only in ``lines`` mode; a thread checks
    every ``interval / 4`` seconds (at most 0.25 s).

        with Heartbeat("train", progress=True):
            stage("reading the data")
            ...

    Args:
        desc: the command, the first word of every line.
        progress: as :func:`make_progress` takes it (``True``: lines unless on a terminal).
        interval: seconds of silence before a line (default: 10, or
            ``$RECFUNNEL_PROGRESS_INTERVAL``); 0 or less turns the heartbeat off.
        clock: the time source (``time.monotonic``; tests pass a fake one).
    """

    def __init__(
        self,
        desc: str = "train",
        *,
        progress: bool | str = True,
        interval: float | None = None,
        stream: TextIO | None = None,
        clock=time.monotonic,
    ) -> None:
        mode = make_progress(progress, stream=stream, interval=interval)
        self.enabled = mode.mode == "lines" and mode.interval > 0
        self.desc, self.interval, self.stream, self.clock = desc, mode.interval, mode.stream, clock
        self.period = min(0.25, self.interval / 4)
        self._stage: str | None = None
        self._stage_started = self._started = clock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def stage(self, name: str | None) -> None:
        """What runs from now on (``None``: nothing to report; the heartbeat keeps quiet)."""
        self._stage, self._stage_started = name, self.clock()

    def beat(self) -> bool:
        """Print the line if it is due; whether it was. Due after ``interval`` seconds of
        silence; while a pass is printing its own lines, only once that pass is late by
        ``period`` too (its updates come too seldom: a long first chunk, a slow machine)."""
        if not self.enabled or self._stage is None:
            return False
        now = self.clock()
        last = max(self._started, _LAST_LINE[0] or self._started)
        late = self.interval + self.period if len(_PRINTING) else self.interval - self.period
        if now - last < late:
            return False
        print(f"{self.desc}: {self._stage} ({_duration(now - self._stage_started)})",
              file=self.stream, flush=True)  # fmt: skip
        _LAST_LINE[0] = now
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self.beat()

    def __enter__(self) -> Heartbeat:
        _HEARTBEAT[0] = self
        if self.enabled:
            self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if _HEARTBEAT[0] is self:
            _HEARTBEAT[0] = None


def running_heartbeat() -> Heartbeat | None:
    """The heartbeat of the running command, if any."""
    return _HEARTBEAT[0]


def stage(name: str) -> None:
    """Name what the running command does next, for its :class:`Heartbeat` (if any)."""
    heartbeat = _HEARTBEAT[0]
    if heartbeat is not None:
        heartbeat.stage(name)
