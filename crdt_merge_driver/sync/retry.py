"""The one retry policy of sync: which failures are retried, how long each wait is, when to stop.

tenacity is imported when a policy is made, not with this module: an idle
`backup` (cron's common case) never pushes, and importing tenacity (with
the concurrent.futures, logging and inspect it pulls in) was a tenth of
its cost. The waits and the deadline are plain callables over tenacity's
retry state, so nothing here subclasses tenacity at import time.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from crdt_merge_driver.log import say
from crdt_merge_driver.sync.verdict import Transient

if TYPE_CHECKING:
    import tenacity

# The first retry waits up to WAIT_FIRST seconds, each later one up to
# WAIT_GROWTH times as long, never more than WAIT_MAX (full jitter: uniform
# from 0). On top, up to WAIT_LOAD times as long as the failed attempt took
# (at most WAIT_LOAD_MAX): attempts slow down when many writers compete, so
# a crowd spreads out at once instead of colliding for several rounds while
# the exponential window grows. Measured with benchmarks/sync_bench.py.
WAIT_FIRST = 0.25
WAIT_GROWTH = 1.5
WAIT_MAX = 4.0
WAIT_LOAD = 10.0
WAIT_LOAD_MAX = 8.0
# While the queue's first lands the waiting commits, a sync that waits for it
# looks again after about WAIT_QUEUE_EACH seconds per commit waiting (50-100%):
# each look is a fetch, and many at once would slow the one push that matters.
WAIT_QUEUE_EACH = 0.05

Clock = Callable[[], float]


class Stop:
    """Stop after ``attempts``, or when the next wait would end past the deadline."""

    def __init__(self, attempts: int, deadline: float, clock: Clock) -> None:
        self.attempts = attempts
        self.at = clock() + deadline
        self.clock = clock

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        # tenacity >= 8.3 computes the wait before asking stop; older ones do not.
        upcoming = float(getattr(retry_state, "upcoming_sleep", 0.0))
        return retry_state.attempt_number >= self.attempts or self.clock() + upcoming >= self.at


class WaitInProportion:
    """``factor`` times what ``measure`` reads from the failure (at most ``most``), jittered.

    The jitter is uniform from ``low`` to 1 times that: from 0 to spread a
    crowd, from 0.5 to look again no sooner than a landing can take.
    """

    def __init__(
        self, measure: Callable[[Transient], float], *, factor: float, most: float, low: float
    ) -> None:
        self.measure = measure
        self.factor, self.most, self.low = factor, most, low

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        failure = retry_state.outcome.exception() if retry_state.outcome else None
        amount = self.measure(failure) if isinstance(failure, Transient) else 0.0
        return min(self.most, self.factor * amount) * random.uniform(self.low, 1.0)  # noqa: S311


def retrying(
    *, attempts: int, deadline: float, sleep: Callable[[float], None], log: TextIO,
    clock: Clock = time.monotonic,
) -> tenacity.Retrying:  # fmt: skip
    """`Transient` failures retried, full-jitter waits, N attempts or a deadline."""
    import tenacity  # noqa: PLC0415 (see the module's docstring)

    def report(state: tenacity.RetryCallState) -> None:
        failure = state.outcome.exception() if state.outcome else None
        reason = failure.reason if isinstance(failure, Transient) else str(failure)
        wait = state.next_action.sleep if state.next_action else 0.0
        say(log, f"sync attempt {state.attempt_number}: {reason}; next try in {wait:.2f}s")

    return tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(Transient),
        stop=Stop(attempts, deadline, clock),
        wait=tenacity.wait_combine(
            tenacity.wait_random_exponential(
                multiplier=WAIT_FIRST, max=WAIT_MAX, exp_base=WAIT_GROWTH
            ),
            # as long as the failed attempt took: spread a crowd out
            WaitInProportion(lambda failed: failed.took, factor=WAIT_LOAD,
                             most=WAIT_LOAD_MAX, low=0.0),
            # while another sync lands the queue: about as long as that takes
            WaitInProportion(lambda failed: failed.queued, factor=WAIT_QUEUE_EACH,
                             most=WAIT_LOAD_MAX, low=0.5),
        ),
        sleep=sleep,
        before_sleep=report,
        reraise=True,
    )
