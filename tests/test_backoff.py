"""The daemon's retry delays: exponential, capped at 8× the interval, never before Retry-After."""

from __future__ import annotations

import pytest

from feedwatch.daemon import backoff_delay


@pytest.mark.parametrize(
    ("failures", "delay"), [(1, 60), (2, 120), (3, 240), (4, 480), (5, 480), (12, 480)]
)
def test_delay_doubles_per_failure_up_to_eight_intervals(failures: int, delay: float) -> None:
    assert backoff_delay(60, failures) == delay


def test_retry_after_longer_than_the_backoff_is_honoured() -> None:
    assert backoff_delay(60, 1, retry_after=900) == 900


def test_retry_after_shorter_than_the_backoff_does_not_shorten_it() -> None:
    assert backoff_delay(60, 3, retry_after=5) == 240
