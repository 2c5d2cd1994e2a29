"""What /healthz answers: None while every stream and destination is well, else one line of why.

Reads what a scrape reads (the views, one listing per destination's queue), never the store.
"""

from __future__ import annotations

from uploader.metrics.views import DestinationView, ServiceView, StreamView, spool_depth

__all__ = ["NOT_RUNNING", "health"]

NOT_RUNNING = "service not running (starting or stopping)"


def health(view: ServiceView | None, now: float) -> str | None:
    """None when healthy, else every stream and destination in trouble and why, joined with "; "."""
    if view is None or not view.running():
        return NOT_RUNNING
    problems: list[str] = []
    for stream in view.streams:
        problems.extend(_stream_problems(stream, view.max_pending_age_s, now))
    # One line whatever a trouble's text holds: /healthz answers with exactly one.
    return "; ".join(" ".join(p.splitlines()) for p in problems) or None


def _stream_problems(stream: StreamView, limit: float, now: float) -> list[str]:
    try:
        trouble = stream.trouble()
    except Exception as exc:  # noqa: BLE001 - /healthz answers in one line, never with a traceback
        trouble = f"state unreadable: {exc!r}"
    out = [] if trouble is None else [f"stream {stream.name}: {trouble}"]
    for dest in stream.destinations:
        out.extend(f"stream {stream.name} destination {dest.name}: {p}"
                   for p in _destination_problems(dest, limit, now))
    return out


def _destination_problems(dest: DestinationView, limit: float, now: float) -> list[str]:
    out = []
    try:
        running = dest.running()
    except Exception as exc:  # noqa: BLE001 - as above
        out.append(f"state unreadable: {exc!r}")
        running = True  # not known to be stopped: the queue below still says something
    if not running:
        out.append("upload worker stopped")
    try:
        _, _, age = spool_depth(dest.queue, now)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        out.append(f"spool unreadable: {exc.strerror or exc}{where}")
        return out
    except Exception as exc:  # noqa: BLE001 - as above
        out.append(f"spool unreadable: {exc!r}")
        return out
    if age > limit:
        out.append(f"oldest pending batch is {age:.0f}s old (limit {limit:g}s): uploads are not getting through")
    return out
