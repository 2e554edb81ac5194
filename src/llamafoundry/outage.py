"""Logging a failure that repeats every second or so (a database or Redis that is down) without a traceback per
attempt: the first failure with its traceback, then one line a minute while it lasts, then the recovery."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

REMINDER_S = 60.0


class RepeatedFailure:
    """One recurring operation's failures, for `logger`. `what` names it: "writing usage records"."""

    def __init__(self, logger: logging.Logger, what: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.what = what
        self._clock = clock
        self._since: float | None = None
        self._reminded = 0.0

    def failed(self, exc: BaseException) -> None:
        now = self._clock()
        if self._since is None:
            self._since = self._reminded = now
            self.logger.error("%s failed; retrying", self.what, exc_info=exc)
        elif now - self._reminded >= REMINDER_S:
            self._reminded = now
            self.logger.error("%s still fails after %.0f s: %s", self.what, now - self._since, exc)

    def succeeded(self) -> None:
        if self._since is not None:
            self.logger.warning("%s works again after %.0f s", self.what, self._clock() - self._since)
            self._since = None
