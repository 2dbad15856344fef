"""A Keras-style progress display.

In a terminal (verbose=1) one line per epoch is redrawn in place:

    1719/1719 ━━━━━━━━━━━━━━━━━━━━ 25s 14ms/step - accuracy: 0.8812 - loss: 0.3301

with the ETA while running and the epoch's time at the end. verbose=2 prints only the final line of each
epoch ("1719/1719 - 25s - 14ms/step - ..."), which is what logs and pipes get with verbose="auto".

An input of unknown length (a generator without `steps_per_epoch`: `target` None) shows the step counter as
Keras 3's Progbar does, "%7d/Unknown" with no bar, and the time so far in place of the ETA:

          57/Unknown 3s 52ms/step - loss: 0.6931

The last line of the epoch counts the steps taken as the target ("57/57 ━━━━ ..."), as Keras's ProgbarLogger
sets its target to the steps seen when the epoch ends.
"""
from __future__ import annotations

import sys
import time
from typing import TextIO

_BAR_WIDTH = 20


def resolve_verbose(verbose: int | str, stream: TextIO | None = None) -> int:
    """0, 1 or 2 from Keras's `verbose` argument; "auto" is 1 in a terminal, else 2."""
    if verbose == "auto":
        stream = stream or sys.stdout
        return 1 if getattr(stream, "isatty", lambda: False)() else 2
    if verbose in (0, 1, 2) and not isinstance(verbose, bool):
        return int(verbose)
    raise ValueError(f"`verbose` must be 0, 1, 2 or 'auto'. Received: verbose={verbose!r}")


def format_duration(seconds: float) -> str:
    """12s, 3m 05s, 1h 02m style, as Keras prints ETAs."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m {int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h {int(seconds % 3600 // 60):02d}m"


def format_per_step(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.0f}s/step"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.0f}ms/step"
    return f"{seconds * 1e6:.0f}us/step"


def format_logs(logs: dict[str, float]) -> str:
    return "".join(f" - {key}: {value:.4f}" if abs(value) >= 1e-3 or value == 0 else f" - {key}: {value:.4e}"
                   for key, value in logs.items())


class Progbar:
    """Progress over `target` steps (None: unknown); `update(step, logs)` redraws, `finish(logs)` writes the last
    line.

    >>> import io
    >>> out = io.StringIO()
    >>> bar = Progbar(None, verbose=1, stream=out)
    >>> bar.update(57, {"loss": 0.6931})
    >>> out.getvalue().split(" 0s")[0]
    '\\r     57/Unknown'
    """

    def __init__(self, target: int | None, verbose: int = 1, stream: TextIO | None = None, interval: float = 0.05):
        self.target = target
        self.verbose = verbose
        self.stream = stream or sys.stdout
        self.interval = interval
        self.start = time.perf_counter()
        self._last_draw = 0.0
        self._width = 0

    def due(self) -> bool:
        """Whether a redraw is due (so the caller reads metrics from the device only then)."""
        return self.verbose == 1 and time.perf_counter() - self._last_draw >= self.interval

    def update(self, step: int, logs: dict[str, float]) -> None:
        if self.verbose != 1:
            return
        now = time.perf_counter()
        self._last_draw = now
        elapsed = now - self.start
        per_step = elapsed / max(step, 1)
        if self.target is None:  # Keras: no bar, and the time so far where the ETA would be
            self._draw(f"{self._counter(step)} {format_duration(elapsed)} {format_per_step(per_step)}"
                       f"{format_logs(logs)}")
            return
        eta = per_step * (self.target - step)
        self._draw(f"{self._counter(step)} {self._bar(step)} {format_duration(eta)} "
                   f"{format_per_step(per_step)}{format_logs(logs)}")

    def learn_target(self, steps: int) -> None:
        """The steps an input of unknown length gave, as the target of the last line (a known target stays)."""
        if self.target is None:
            self.target = steps

    def finish(self, logs: dict[str, float], step: int | None = None) -> None:
        if self.verbose == 0:
            return
        if self.target is None:  # Keras's ProgbarLogger: the steps seen become the target when the epoch ends
            self.target = 0 if step is None else step
        step = self.target if step is None else step
        elapsed = time.perf_counter() - self.start
        per_step = format_per_step(elapsed / max(step, 1))
        if self.verbose == 1:
            self._draw(f"{self._counter(step)} {self._bar(step)} {format_duration(elapsed)} {per_step}"
                       f"{format_logs(logs)}")
            self.stream.write("\n")
        else:
            self.stream.write(f"{self._counter(step)} - {format_duration(elapsed)} - {per_step}{format_logs(logs)}\n")
        self.stream.flush()

    def _counter(self, step: int) -> str:
        if self.target is None:
            return f"{step:>7}/Unknown"  # Keras 3's "%7d/Unknown"
        digits = len(str(self.target))
        return f"{step:>{digits}}/{self.target}"

    def _bar(self, step: int) -> str:
        done = int(_BAR_WIDTH * step / max(self.target or 0, 1))
        return "━" * done + "\x1b[2m" + "━" * (_BAR_WIDTH - done) + "\x1b[0m" if done < _BAR_WIDTH else "━" * _BAR_WIDTH

    def _draw(self, line: str) -> None:
        padding = " " * max(self._width - len(line), 0)
        self.stream.write("\r" + line + padding)
        self.stream.flush()
        self._width = len(line)
