"""train --max-minutes: a run that must end by a deadline (a fixed accelerator lease) fits its
step count, and so its learning-rate schedule, into the time it has."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

# The step count is fitted when FIT_FIRST steps are done and again each time the steps done double,
# on the rate of the latest half of them: the first steps run slower (on a GPU, each new batch
# shape costs its first time; on an H200 a stage's rate over steps 5..25 was a quarter to a half
# of its rate over steps 100..200), so one early fit would stop the run far too soon.
FIT_FROM, FIT_FIRST = 5, 25
# share of the time left that the fitted steps may fill: the rest is for the last evaluation and save
FIT_MARGIN = 0.9


@dataclass
class TimeLimit:
    deadline: float  # time.monotonic()
    planned: int  # the steps --epochs or --max-steps ask for: the most the run will take
    marks: dict[int, float] = field(default_factory=dict)  # steps done -> when

    def step_count(self, step: int, done: int, total: int) -> tuple[int, dict | None]:
        """The run's step count after `step` (`done` of them since this process began), and a record
        for the log when it changes: refitted when the steps done reach 25, 50, 100, ..., and cut to
        this step past the deadline."""
        now = time.monotonic()
        if now >= self.deadline:
            return step, {"event": "out of time", "step": step}
        if done == FIT_FROM or (
            done >= FIT_FIRST and done % FIT_FIRST == 0 and _power_of_two(done // FIT_FIRST)
        ):
            self.marks[done] = now
        since = FIT_FROM if done == FIT_FIRST else done // 2
        if done < FIT_FIRST or done not in self.marks or since not in self.marks:
            return total, None
        rate = (done - since) / (now - self.marks[since])
        fitted = max(step + 1, min(self.planned, step + int(rate * (self.deadline - now) * FIT_MARGIN)))
        record = {"event": "fitted to time", "step": step, "steps": fitted, "steps_per_s": round(rate, 2)}
        return fitted, record


def _power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0
