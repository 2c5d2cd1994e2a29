"""Wall-clock stamps in the configured zone: "07/10/2025 04:15:00 PM EDT" and back to instants."""

from __future__ import annotations

from datetime import date, datetime

import pytz

__all__ = ["DEFAULT_TIMEZONE", "STAMP_FORMAT", "format_stamp", "parse_stamp", "day_of"]

DEFAULT_TIMEZONE = "America/New_York"  # the pipeline's zone: the config's and the writer's default
STAMP_FORMAT = "%m/%d/%Y %I:%M:%S %p"
_UTC_NAMES = {"UTC", "GMT", "Z"}


def format_stamp(instant: datetime, tz: pytz.BaseTzInfo) -> str:
    """Render an aware instant as wall time in ``tz`` with the zone's abbreviation."""
    return instant.astimezone(tz).strftime(STAMP_FORMAT + " %Z")


def parse_stamp(text: str, tz: pytz.BaseTzInfo) -> datetime | None:
    """Parse a stamp into an aware instant, or None if it cannot be read.

    The abbreviation decides which of two repeated wall times is meant (01:30 AM EDT and
    01:30 AM EST on the fall-back day are an hour apart); an abbreviation the zone does not
    use at that wall time makes the stamp unreadable rather than silently guessed.
    """
    wall, _, abbr = text.strip().rpartition(" ")
    try:
        naive = datetime.strptime(wall, STAMP_FORMAT)
    except ValueError:
        return None
    if abbr.upper() in _UTC_NAMES:
        utc: datetime = pytz.utc.localize(naive)
        return utc
    for is_dst in (False, True):
        aware: datetime = tz.localize(naive, is_dst=is_dst)
        if aware.tzname() == abbr:
            return aware.astimezone(pytz.utc)
    return None


def day_of(instant: datetime, tz: pytz.BaseTzInfo) -> date:
    """The calendar day of an instant in ``tz``."""
    return instant.astimezone(tz).date()
