"""When the daily close-out runs: just after midnight in the configured zone, DST included.

APScheduler 3.x's CronTrigger mis-steps around DST with pytz zones (measured with 3.11: from
00:01 EST on 2025-03-09 in New York its next fire time is 03-11, skipping 03-10, and on a
repeated midnight it returns the same time again). So the close-out has its own trigger built
on ``next_close_out``, a pure function: a wall time that does not exist that day (a skipped
midnight) runs at the first instant after the gap; one that occurs twice runs at the first.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

import pytz
from apscheduler.triggers.base import BaseTrigger

__all__ = ["next_close_out", "wall_instant", "CloseOutTrigger"]


def wall_instant(day: date, at: time, tz: pytz.BaseTzInfo) -> datetime:
    """The first instant at which the wall clock in ``tz`` shows ``day`` ``at`` or later."""
    naive = datetime.combine(day, at)
    instant: datetime
    try:
        instant = tz.localize(naive, is_dst=None)
    except pytz.AmbiguousTimeError:
        instant = min(tz.localize(naive, is_dst=True), tz.localize(naive, is_dst=False))
    except pytz.NonExistentTimeError:
        instant = _end_of_gap(naive, tz)
    return instant


def _end_of_gap(naive: datetime, tz: pytz.BaseTzInfo) -> datetime:
    """The first instant whose wall time is ``naive`` or later, where ``naive`` is skipped.

    The two readings of the skipped time (at the offsets before and after the gap) bracket the
    jump, which is found to the second by bisection (wall time only grows across a gap, and
    zones change offset on whole seconds).
    """
    readings = [int(tz.localize(naive, is_dst=d).timestamp()) for d in (True, False)]
    lo, hi = min(readings), max(readings)  # wall(lo) < naive <= wall(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, tz).replace(tzinfo=None) >= naive:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, tz)


def next_close_out(after: datetime, tz: pytz.BaseTzInfo, at: time) -> datetime:
    """The first close-out instant strictly after ``after``."""
    local_day = after.astimezone(tz).date()
    for k in range(3):
        candidate = wall_instant(local_day + timedelta(days=k), at, tz)
        if candidate > after:
            return candidate
    raise AssertionError("unreachable: a close-out happens every day")


class CloseOutTrigger(BaseTrigger):  # type: ignore[misc]
    """APScheduler trigger firing once per day at ``at`` in ``tz`` (see module docstring)."""

    def __init__(self, tz: pytz.BaseTzInfo, at: time) -> None:
        self.tz = tz
        self.at = at

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime:
        base = previous_fire_time if previous_fire_time is not None else now - timedelta(microseconds=1)
        return next_close_out(base, self.tz, self.at)

    def __str__(self) -> str:
        return f"close-out[{self.at.isoformat()} {self.tz.zone}]"
