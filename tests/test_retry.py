"""The retry delay as a pure function: compute_backoff's doubling, cap and equal jitter."""

from __future__ import annotations

import random

import pytest

from uploader.retry import FIRST_DELAY_S, compute_backoff

CAP = 600.0
JUST_BELOW_ONE = 1.0 - 2.0**-53  # the largest value random.random() can return


def test_no_failure_yet_means_no_wait() -> None:
    """Before the first failure (attempts 0, or a nonsensical negative count) the wait is zero."""
    assert compute_backoff(0, CAP, 0.7) == 0.0
    assert compute_backoff(-3, CAP, 0.7) == 0.0


def test_first_failure_waits_between_half_and_one_first_delay() -> None:
    """After the first failure the wait spans FIRST_DELAY_S / 2 to FIRST_DELAY_S: 0.5 s to 1 s."""
    assert FIRST_DELAY_S == 1.0
    assert compute_backoff(1, CAP, 0.0) == 0.5
    assert 0.99 < compute_backoff(1, CAP, JUST_BELOW_ONE) <= 1.0


def test_nominal_delay_doubles_with_each_failure_until_the_cap() -> None:
    """With rand fixed at 0 the wait is half of 1, 2, 4, ... s, and half the cap once 2^(n-1) passes it."""
    waits = [compute_backoff(n, CAP, 0.0) for n in range(1, 13)]
    assert waits == [0.5, 1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]


def test_wait_never_decreases_with_more_failures() -> None:
    """For any fixed rand the wait is non-decreasing in the number of failures."""
    for rand in (0.0, 0.25, 0.5, JUST_BELOW_ONE):
        waits = [compute_backoff(n, CAP, rand) for n in range(1, 40)]
        assert waits == sorted(waits)


@pytest.mark.parametrize("attempts", [11, 64, 1_000, 10**9])
def test_many_failures_stay_capped_and_do_not_overflow(attempts: int) -> None:
    """However many failures, the wait stays within [cap / 2, cap] and computing it raises nothing."""
    assert compute_backoff(attempts, CAP, 0.0) == CAP / 2
    assert CAP / 2 <= compute_backoff(attempts, CAP, JUST_BELOW_ONE) <= CAP


def test_jitter_from_a_seeded_random_stays_within_half_and_whole_nominal() -> None:
    """With a seeded Random, every wait lies in [d/2, d], d = min(cap, first * 2^(n-1)), never < 0."""
    rng = random.Random(20260308)
    for _ in range(2_000):
        attempts = rng.randint(1, 30)
        cap = rng.choice([0.25, 1.0, 30.0, 600.0])
        first = rng.choice([0.1, 1.0, 5.0])
        nominal = min(cap, first * 2.0 ** (attempts - 1))
        wait = compute_backoff(attempts, cap, rng.random(), first_s=first)
        assert 0.0 <= nominal / 2 <= wait <= nominal


def test_jitter_spreads_batches_that_failed_together() -> None:
    """Different rand values give different waits for one failure count: no retries in lockstep."""
    rng = random.Random(7)
    waits = {compute_backoff(5, CAP, rng.random()) for _ in range(50)}
    assert len(waits) == 50
    assert min(waits) >= 8.0 and max(waits) < 16.0


def test_wait_is_linear_in_rand_over_the_upper_half() -> None:
    """Equal jitter: the wait is d/2 + rand * d/2, so rand 0.5 lands at three quarters of d."""
    assert compute_backoff(4, CAP, 0.5) == pytest.approx(6.0)  # d = 8
    assert compute_backoff(4, CAP, 0.5, first_s=0.5) == pytest.approx(3.0)  # d = 4


def test_a_cap_below_the_first_delay_caps_the_first_wait_too() -> None:
    """A cap smaller than first_s bounds even the first wait: [cap / 2, cap]."""
    assert compute_backoff(1, 0.2, 0.0) == pytest.approx(0.1)
    assert compute_backoff(1, 0.2, JUST_BELOW_ONE) <= 0.2


def test_backoff_is_a_function_of_its_inputs() -> None:
    """The same arguments give the same wait: no hidden clock or randomness."""
    assert compute_backoff(6, CAP, 0.3141) == compute_backoff(6, CAP, 0.3141)
