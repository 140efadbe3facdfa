"""The retry policy is a plain value: tested on its own."""

import random

import pytest

from rangestream import Retry, Timeouts


def test_seed_defaults_back_off_1_2_4_seconds():
    r = Retry(jitter=0)
    assert r.attempts == 3
    assert [r.delay(n) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]


def test_cap_and_jitter_bounds():
    r = Retry(backoff=1.0, cap=5.0, jitter=0.2)
    rng = random.Random(7)
    for n in range(1, 12):
        d = r.delay(n, rng=rng)
        base = min(2 ** (n - 1), 5.0)
        assert base * 0.8 <= d <= base * 1.2


def test_retry_after_lengthens_never_shortens_and_is_capped():
    r = Retry(backoff=2.0, jitter=0, retry_after_cap=10)
    assert r.delay(1, retry_after=0.5) == 2.0
    assert r.delay(1, retry_after=7) == 7
    assert r.delay(1, retry_after=3600) == 10
    assert Retry(backoff=1, jitter=0, respect_retry_after=False).delay(1, retry_after=9) == 1


def test_not_before_is_the_servers_wait_alone():
    # What every attempt of a chunk honours after a Retry-After, prefetch or not (issue 9, item 4).
    r = Retry(backoff=5.0, retry_after_cap=10)
    assert r.not_before(None) == 0.0 and r.not_before(-3) == 0.0
    assert r.not_before(2) == 2.0 and r.not_before(3600) == 10
    assert Retry(respect_retry_after=False).not_before(9) == 0.0


def test_which_statuses_retry():
    r = Retry()
    for s in (429, 500, 502, 503, 504, 599, 408):
        assert r.is_retryable_status(s)
    for s in (400, 401, 403, 404, 410, 416):
        assert not r.is_retryable_status(s)
    assert Retry(statuses=frozenset({503})).is_retryable_status(503)
    assert not Retry(statuses=frozenset({503})).is_retryable_status(500)


def test_invalid_policies_rejected():
    with pytest.raises(ValueError):
        Retry(attempts=-1)
    with pytest.raises(ValueError):
        Retry(jitter=2)
    with pytest.raises(ValueError):
        Timeouts(idle=0)
    assert Timeouts() == Timeouts(request=30, idle=20, prefetch=5)
