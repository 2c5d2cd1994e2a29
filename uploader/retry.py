"""Retry policy for spooled batches: exponential backoff with jitter, as a pure function."""

from __future__ import annotations

__all__ = ["compute_backoff", "FIRST_DELAY_S"]

FIRST_DELAY_S = 1.0


def compute_backoff(attempts: int, cap_s: float, rand: float, first_s: float = FIRST_DELAY_S) -> float:
    """Seconds to wait after the ``attempts``-th failure (1-based).

    Doubles from ``first_s`` up to ``cap_s``; ``rand`` in [0, 1) spreads the wait over its upper
    half ("equal jitter") so batches that failed together do not retry in lockstep, yet never
    retry sooner than half the nominal delay.
    """
    if attempts < 1:
        return 0.0
    nominal = min(cap_s, first_s * 2.0 ** min(attempts - 1, 62))
    return nominal / 2.0 + rand * nominal / 2.0
