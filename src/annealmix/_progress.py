"""A plain-text progress bar on stderr, shown only for work that lasts a while."""

from __future__ import annotations

import sys
import time


class Progress:
    """``update(done)`` redraws ``[#####.....] done/total unit, elapsed, ~left``.

    Nothing is drawn until ``delay`` seconds have passed, so quick work stays quiet.

    Args:
        total: the amount of work.
        unit: what is counted (``"steps"``).
        delay: seconds before the bar first appears.
    """

    def __init__(self, total: int, unit: str = "steps", delay: float = 1.0) -> None:
        self.total, self.unit, self.delay = max(1, total), unit, delay
        self.started = time.perf_counter()
        self.shown = False
        self._drawn = 0.0

    def update(self, done: int, *, force: bool = False) -> None:
        now = time.perf_counter()
        spent = now - self.started
        if spent < self.delay or (not force and now - self._drawn < 0.25):
            return  # quiet at first, then at most four redraws a second
        self._drawn = now
        width = 30
        filled = int(width * min(done, self.total) / self.total)
        left = spent / done * (self.total - done) if done else 0.0
        sys.stderr.write(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {done:,}/{self.total:,} {self.unit} "
            f"{spent:5.0f}s elapsed, ~{left:4.0f}s left "
        )
        sys.stderr.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.update(self.total, force=True)
            sys.stderr.write("\n")
