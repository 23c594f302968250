"""Progress for logs: a plain line every ``interval_s`` instead of a bar (which, off a terminal, writes
carriage returns that pm2 and log files turn into one endless line).

    progress = ProgressLine("epoch 1", total=480, write=logger.info)
    for batch in batches:
        ...
        progress.update(1, loss=f"{loss:.3f}")
    progress.close()

writes ``epoch 1: 120/480 (25%) loss=2.310 · 1m20s elapsed · eta 4m00s`` at most every ``interval_s``
(and always at the end)."""

from __future__ import annotations

import time
from collections.abc import Callable


def duration(seconds: float) -> str:
    """``45s``, ``3m05s``, ``2h04m``."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class ProgressLine:
    """Counts work done and writes a progress line through ``write`` every ``interval_s``."""

    def __init__(
        self,
        desc: str,
        *,
        total: int | None = None,
        write: Callable[[str], None] = print,
        interval_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.desc, self.total, self.count = desc, total, 0
        self._write, self._interval, self._clock = write, interval_s, clock
        self._start = self._last = clock()
        self._fields: dict[str, object] = {}

    def line(self) -> str:
        elapsed = self._clock() - self._start
        parts = [f"{self.desc}: {self.count}" + (f"/{self.total}" if self.total else "")]
        if self.total:
            parts[0] += f" ({100 * self.count / self.total:.0f}%)"
        parts[0] += "".join(f" {key}={value}" for key, value in self._fields.items())
        parts.append(f"{duration(elapsed)} elapsed")
        if self.total and 0 < self.count < self.total:
            parts.append(f"eta {duration(elapsed / self.count * (self.total - self.count))}")
        return " · ".join(parts)

    def update(self, n: int = 1, **fields: object) -> None:
        self.count += n
        self._fields.update(fields)
        now = self._clock()
        if now - self._last >= self._interval:
            self._last = now
            self._write(self.line())

    def close(self) -> None:
        self._write(self.line())
