"""The close-out schedule as pure functions: wall_instant, next_close_out and CloseOutTrigger across DST."""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime, time, timedelta

import pytest
import pytz

from uploader.schedule import CloseOutTrigger, next_close_out, wall_instant

NY = pytz.timezone("America/New_York")
UTC = pytz.utc
TOKYO = pytz.timezone("Asia/Tokyo")
DEFAULT_AT = time(0, 0, 30)
HOUR = timedelta(hours=1)


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def _fires(tz: pytz.BaseTzInfo, at: time, now: datetime, count: int) -> list[datetime]:
    """The trigger's first ``count`` fire times from ``now``, fed back as APScheduler does."""
    trigger = CloseOutTrigger(tz, at)
    fires: list[datetime] = []
    previous: datetime | None = None
    for _ in range(count):
        previous = trigger.get_next_fire_time(previous, now)
        fires.append(previous)
    return fires


def _gaps(fires: list[datetime]) -> list[timedelta]:
    return [b - a for a, b in zip(fires, fires[1:])]


def test_default_close_out_on_spring_forward_day_is_just_after_midnight_est() -> None:
    """On 2026-03-08 in New York the default close-out fires at 00:00:30 EST, before the gap."""
    fire = wall_instant(date(2026, 3, 8), DEFAULT_AT, NY)
    assert fire.astimezone(UTC) == _utc(2026, 3, 8, 5, 0, 30)
    assert fire.tzname() == "EST"


def test_default_close_outs_around_spring_forward_are_24_then_23_hours_apart() -> None:
    """Midnight EST to midnight EDT is 23 hours: the fire times across 2026-03-08 step 24, 23, 24 h."""
    fires = _fires(NY, DEFAULT_AT, _utc(2026, 3, 6, 12), 4)
    assert [f.astimezone(NY).date() for f in fires] == [date(2026, 3, d) for d in (7, 8, 9, 10)]
    assert all(f.astimezone(NY).time() == DEFAULT_AT for f in fires)
    assert _gaps(fires) == [24 * HOUR, 23 * HOUR, 24 * HOUR]


def test_default_close_outs_around_fall_back_are_24_then_25_hours_apart() -> None:
    """Midnight EDT to midnight EST is 25 hours: the fire times across 2026-11-01 step 24, 25, 24 h."""
    fires = _fires(NY, DEFAULT_AT, _utc(2026, 10, 30, 12), 4)
    days = [date(2026, 10, 31), date(2026, 11, 1), date(2026, 11, 2), date(2026, 11, 3)]
    assert [f.astimezone(NY).date() for f in fires] == days
    assert fires[1].astimezone(UTC) == _utc(2026, 11, 1, 4, 0, 30)
    assert fires[2].astimezone(UTC) == _utc(2026, 11, 2, 5, 0, 30)
    assert _gaps(fires) == [24 * HOUR, 25 * HOUR, 24 * HOUR]


@pytest.mark.parametrize(
    ("zone", "day", "at", "first_after_gap"),
    [
        # New York skips 02:00-03:00 on 2026-03-08: the first instant after the gap is 03:00 EDT.
        ("America/New_York", date(2026, 3, 8), time(2, 30), _utc(2026, 3, 8, 7, 0)),
        # Santiago skips 00:00-01:00 on 2026-09-06 (the "skipped midnight" of schedule.py's docstring).
        ("America/Santiago", date(2026, 9, 6), DEFAULT_AT, _utc(2026, 9, 6, 4, 0)),
    ],
)
def test_close_out_in_a_skipped_hour_fires_at_the_first_instant_after_the_gap(
    zone: str, day: date, at: time, first_after_gap: datetime
) -> None:
    """A close-out time the day skips fires at the first instant after the gap (DESIGN §6)."""
    assert wall_instant(day, at, pytz.timezone(zone)).astimezone(UTC) == first_after_gap


def test_close_out_in_the_skipped_hour_fires_once_that_day_between_its_neighbours() -> None:
    """02:30 does not exist on 2026-03-08, yet one close-out falls on that local day, after the gap."""
    fires = _fires(NY, time(2, 30), _utc(2026, 3, 6, 12), 3)
    local = [f.astimezone(NY) for f in fires]
    assert [f.date() for f in local] == [date(2026, 3, 7), date(2026, 3, 8), date(2026, 3, 9)]
    assert local[1].tzname() == "EDT" and local[1].time() >= time(3, 0)
    assert local[0].time() == local[2].time() == time(2, 30)
    assert fires[2] - fires[0] == 47 * HOUR


def test_close_out_in_the_repeated_hour_fires_at_the_first_occurrence_only() -> None:
    """01:30 happens twice on 2026-11-01: the close-out fires at 01:30 EDT and not again at 01:30 EST."""
    fires = _fires(NY, time(1, 30), _utc(2026, 10, 30, 12), 3)
    assert fires[1].astimezone(UTC) == _utc(2026, 11, 1, 5, 30)
    assert fires[1].astimezone(NY).tzname() == "EDT"
    assert fires[2].astimezone(NY).date() == date(2026, 11, 2)
    assert _gaps(fires) == [24 * HOUR, 25 * HOUR]


def test_next_close_out_between_the_two_repeated_hours_moves_to_the_next_day() -> None:
    """At 01:15 EST on 2026-11-01, after the first 01:30, the next close-out is the next day's."""
    between = NY.localize(datetime(2026, 11, 1, 1, 15), is_dst=False)
    assert next_close_out(between, NY, time(1, 30)).astimezone(UTC) == _utc(2026, 11, 2, 6, 30)


@pytest.mark.parametrize(
    ("zone", "at", "short", "long"),
    [
        ("America/New_York", DEFAULT_AT, 1, 1),
        ("America/New_York", time(1, 30), 1, 1),  # 01:30 exists every day, twice on 11-01
        ("UTC", DEFAULT_AT, 0, 0),
        ("Asia/Tokyo", DEFAULT_AT, 0, 0),
        ("Australia/Sydney", DEFAULT_AT, 1, 1),
    ],
)
def test_a_year_of_close_outs_fires_once_per_local_day(zone: str, at: time, short: int, long: int) -> None:
    """Through 2026 the trigger fires once per local day at ``at``, 23 or 25 h apart only at DST."""
    tz = pytz.timezone(zone)
    fires = _fires(tz, at, _utc(2025, 12, 31, 0), 370)
    days = [f.astimezone(tz).date() for f in fires]
    assert days == [days[0] + timedelta(days=k) for k in range(len(days))]
    assert all(f.astimezone(tz).time() == at for f in fires)
    gaps = Counter(_gaps(fires))
    assert set(gaps) <= {23 * HOUR, 24 * HOUR, 25 * HOUR}
    assert (gaps[23 * HOUR], gaps[25 * HOUR]) == (short, long)


def test_utc_close_out_is_every_day_at_the_same_instant_and_strictly_after() -> None:
    """In UTC the close-out is 00:00:30Z daily; asked from that very instant, the next is a day later."""
    fire = next_close_out(_utc(2026, 3, 8, 0, 0, 0), UTC, DEFAULT_AT)
    assert fire == _utc(2026, 3, 8, 0, 0, 30)
    assert next_close_out(fire, UTC, DEFAULT_AT) == _utc(2026, 3, 9, 0, 0, 30)


def test_zone_ahead_of_utc_closes_its_local_day_on_the_previous_utc_day() -> None:
    """Tokyo's close-out for 2026-03-08 is at 15:00:30Z on 03-07; it is found from 14:00Z that UTC day."""
    fire = next_close_out(_utc(2026, 3, 7, 14, 0), TOKYO, DEFAULT_AT)
    assert fire == _utc(2026, 3, 7, 15, 0, 30)
    assert fire.astimezone(TOKYO).date() == date(2026, 3, 8)


def test_next_close_out_does_not_depend_on_the_zone_after_is_given_in() -> None:
    """The same instant given in UTC or in the zone yields the same close-out."""
    instant = _utc(2026, 11, 1, 5, 45)
    assert next_close_out(instant, NY, time(1, 30)) == next_close_out(instant.astimezone(NY), NY, time(1, 30))


def test_trigger_started_exactly_at_a_close_out_fires_at_it_then_next_day() -> None:
    """Started exactly on a close-out instant, the trigger fires at it first, then a day later."""
    trigger = CloseOutTrigger(NY, DEFAULT_AT)
    now = _utc(2026, 3, 9, 4, 0, 30)
    first = trigger.get_next_fire_time(None, now)
    assert first == now
    assert trigger.get_next_fire_time(first, now) == _utc(2026, 3, 10, 4, 0, 30)


def test_trigger_started_after_the_close_out_waits_for_the_next_day() -> None:
    """Started a second after today's close-out, the trigger's first fire is tomorrow's."""
    trigger = CloseOutTrigger(NY, DEFAULT_AT)
    assert trigger.get_next_fire_time(None, _utc(2026, 11, 1, 4, 0, 31)) == _utc(2026, 11, 2, 5, 0, 30)
