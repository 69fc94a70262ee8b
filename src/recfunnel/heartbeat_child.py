"""The heartbeat's watcher: a small process that speaks while the command's interpreter cannot.

A Python thread cannot print while another thread holds the interpreter lock, and importing
torch or reading a Parquet column can hold it for seconds. :class:`recfunnel.progress.Heartbeat`
therefore runs its clock here, in a process of its own started as
``python -I -S heartbeat_child.py DESC INTERVAL STARTED``, and tells it, a line each, on stdin:

    s <t> <name>   the stage from time t on (no name: nothing to report)
    l <t>          the command printed a line at time t

The watcher prints ``DESC: <stage> (<how long>)`` on its stderr (the command's own) whenever
:func:`due` says so, writes the time of each line it printed on stdout (the command reads it
back: a pass's next line comes ``interval`` after the last line of any kind), and exits when
its stdin closes, the command's end or death. Times are ``time.monotonic()``: one clock for
every process of the machine.

Standard library only, run by its path (not imported through the package): it starts in
milliseconds, before the command has imported anything heavy.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time

#: when, as a share of the interval since the last line, the heartbeat speaks and a pass
#: prints its own line: early enough that a late wake-up on a loaded machine (the heartbeat
#: looks every quarter second) still keeps every silence under the interval, and the pass
#: first, so while its updates come often its line (with its counts) is the one printed
HEARTBEAT_AT = 0.9
PASS_AT = 0.85


def due(now: float, last: float, interval: float) -> bool:
    """Whether a heartbeat line is due at ``now``, the ``last`` line of any kind having been
    printed at ``last``."""
    return now - last >= HEARTBEAT_AT * interval


def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h01m``; ``?`` when not finite."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def main(argv: list[str]) -> int:
    # Ctrl-C reaches the terminal's whole process group, this watcher too: the command answers
    # it ("interrupted"), and the watcher leaves when the command's end closes its stdin
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    desc, interval, started = argv[0], float(argv[1]), float(argv[2])
    period = min(0.25, interval / 4)
    state = {"stage": None, "since": started, "last": started}
    lock, closed = threading.Lock(), threading.Event()

    def listen() -> None:
        try:
            for message in sys.stdin:
                kind, _, rest = message.rstrip("\n").partition(" ")
                with lock:
                    if kind == "s":
                        when, _, name = rest.partition(" ")
                        state["stage"], state["since"] = name or None, float(when)
                    elif kind == "l":
                        state["last"] = max(state["last"], float(rest))
        finally:
            closed.set()

    threading.Thread(target=listen, daemon=True).start()
    while not closed.wait(period):
        with lock:
            now = time.monotonic()
            if state["stage"] is None or not due(now, state["last"], interval):
                continue
            line = f"{desc}: {state['stage']} ({duration(now - state['since'])})\n"
            state["last"] = now
        try:
            sys.stderr.write(line)
            sys.stderr.flush()
            sys.stdout.write(f"{now!r}\n")
            sys.stdout.flush()
        except OSError:  # the command is gone
            return 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
