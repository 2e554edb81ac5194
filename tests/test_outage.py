"""A failure that repeats every second is logged once with its traceback, then once a minute, then recovered."""

from __future__ import annotations

import logging

import pytest

from llamafoundry.outage import RepeatedFailure


def test_an_outage_logs_a_traceback_once_a_reminder_a_minute_and_the_recovery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    failures = RepeatedFailure(logging.getLogger("test.outage"), "writing usage records", clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="test.outage"):
        for _ in range(120):  # two minutes of a failure every second
            failures.failed(ConnectionError("refused"))
            now[0] += 1.0
        failures.succeeded()
        failures.succeeded()  # nothing to report twice
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "writing usage records failed; retrying",
        "writing usage records still fails after 60 s: refused",
        "writing usage records works again after 120 s",
    ]
    assert caplog.records[0].exc_info is not None and caplog.records[1].exc_info is None
