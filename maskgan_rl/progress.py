"""One line per reporting step with rate and ETA, for every long loop (pretraining, GAN iterations),
logged at INFO by the `maskgan_rl.progress` logger (the command line prints it on stderr)."""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger(__name__)


class Progress:
    """`Progress("mle", total=3000)`; `.update(step, loss=2.3)` logs a line at most every `every_s` seconds.

    `initial`: steps already done before this process started (a resumed run); the rate and ETA
    count only the steps done since.
    """

    def __init__(self, name: str, total: int, unit: str = "step", every_s: float = 2.0, initial: int = 0):
        self.name, self.total, self.unit, self.every_s, self.initial = name, total, unit, every_s, initial
        self.start = time.perf_counter()
        self.last_line = -float("inf")

    def update(self, done: int, force: bool = False, **metrics: Any) -> None:
        now = time.perf_counter()
        if not force and now - self.last_line < self.every_s and done < self.total:
            return
        self.last_line = now
        elapsed = now - self.start
        rate = (done - self.initial) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        shown = "".join(f" {k}={_fmt(v)}" for k, v in metrics.items())
        log.info(f"[{self.name}] {done}/{self.total}{shown} | {rate:.2f} {self.unit}/s, elapsed {_clock(elapsed)}, eta {_clock(eta)}")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _clock(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
