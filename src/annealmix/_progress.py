"""A plain-text progress bar on stderr, shown only for work that lasts a while."""

from __future__ import annotations

import sys
import time


class Progress:
    """``update(done)`` redraws ``[#####.....] done/total unit, elapsed, ~left``.

    Nothing is drawn until ``delay`` seconds have passed, so quick work stays quiet.
    On a terminal the bar redraws in place, at most four times a second; into a file
    or a pipe (a job's log) it writes a whole line at most every ``log_every`` seconds.

    Args:
        total: the amount of work.
        unit: what is counted (``"steps"``).
        delay: seconds before the bar first appears.
    """

    def __init__(
        self, total: int, unit: str = "steps", delay: float = 1.0, log_every: float = 10.0
    ) -> None:
        self.total, self.unit, self.delay = max(1, total), unit, delay
        self.started = time.perf_counter()
        self.shown = False
        self._drawn = 0.0
        self._tty = sys.stderr.isatty()
        self._every = 0.25 if self._tty else log_every

    def update(self, done: int, *, force: bool = False) -> None:
        now = time.perf_counter()
        spent = now - self.started
        if spent < self.delay or (not force and now - self._drawn < self._every):
            return  # quiet at first, then at most one redraw (or log line) per interval
        self._drawn = now
        width = 30
        filled = int(width * min(done, self.total) / self.total)
        left = spent / done * (self.total - done) if done else 0.0
        line = (
            f"[{'#' * filled}{'.' * (width - filled)}] {done:,}/{self.total:,} {self.unit} "
            f"{spent:5.0f}s elapsed, ~{left:4.0f}s left"
        )
        sys.stderr.write(f"\r{line} " if self._tty else f"{line}\n")
        sys.stderr.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.update(self.total, force=True)
            if self._tty:
                sys.stderr.write("\n")
