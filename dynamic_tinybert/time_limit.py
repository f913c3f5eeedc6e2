"""train --max-minutes: a run that must end by a deadline (a fixed accelerator lease) fits its
step count, and so its learning-rate schedule, into the time it has."""

from __future__ import annotations

import time
from dataclasses import dataclass

# the steps FIT_FROM..FIT_TO after the start (or a resume) are timed (the first ones warm up), and
# the step count is fitted to the time left, less a margin for the last evaluation and save
FIT_FROM, FIT_TO, FIT_MARGIN = 5, 25, 0.9


@dataclass
class TimeLimit:
    deadline: float  # time.monotonic()
    timed_from: float | None = None

    def step_count(self, step: int, done: int, total: int, fitted: int | None) -> tuple[int, dict | None]:
        """The run's step count after `step` (`done` of them since this process began), and a record
        for the log when it changes: fitted once (`fitted` is an earlier fit, kept by a resumed run),
        and cut to this step past the deadline."""
        now = time.monotonic()
        if now >= self.deadline:
            return step, {"event": "out of time", "step": step}
        if done == FIT_FROM:
            self.timed_from = now
        elif done == FIT_TO and self.timed_from is not None and fitted is None:
            rate = (FIT_TO - FIT_FROM) / (now - self.timed_from)
            total = max(step + 1, min(total, step + int(rate * (self.deadline - now) * FIT_MARGIN)))
            return total, {"event": "fitted to time", "steps": total, "steps_per_s": round(rate, 2)}
        return total, None
