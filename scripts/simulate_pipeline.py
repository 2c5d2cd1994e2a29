#!/usr/bin/env python3
"""Write realistic fetches into the local file through the pipeline's writer.

    python scripts/simulate_pipeline.py                      # 1 fetch/s into config.toml's file
    python scripts/simulate_pipeline.py --rate 5 --count 35  # 35 fetches, 5 per second
    python scripts/simulate_pipeline.py --day 2025-07-10     # timestamps on that day (backfill)
    python scripts/simulate_pipeline.py --ledger out.jsonl   # record fetch_id, day, matches per fetch
    python scripts/simulate_pipeline.py --stream odds        # into the file of the config's stream "odds"
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import pytz

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from uploader.config import default_config_path, load_config  # noqa: E402  (path set just above)
from uploader.errors import UploaderError  # noqa: E402
from uploader.fetchlog import FetchWriter  # noqa: E402

SPORTS = ["basketball_nba", "americanfootball_nfl", "icehockey_nhl", "baseball_mlb", "soccer_epl"]
BOOKS = ["draftkings", "fanduel", "betmgm", "caesars", "pointsbet"]


def fake_api_data(rng: random.Random, target_bytes: int) -> tuple[dict, int]:
    """Odds-API-shaped data of roughly ``target_bytes``; returns it and its match count."""
    games = []
    size = 0
    while size < target_bytes:
        game = {
            "id": f"{rng.getrandbits(64):016x}",
            "sport_key": rng.choice(SPORTS),
            "commence_time": f"2025-07-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:00:00Z",
            "home_team": f"Team {rng.randint(1, 60)}",
            "away_team": f"Team {rng.randint(61, 120)}",
            "bookmakers": [
                {"key": b, "markets": [{"key": "h2h", "outcomes": [
                    {"name": "home", "price": round(rng.uniform(1.1, 4.0), 2)},
                    {"name": "away", "price": round(rng.uniform(1.1, 4.0), 2)}]}]}
                for b in rng.sample(BOOKS, 3)
            ],
        }
        games.append(game)
        size += len(json.dumps(game))
    return {"games": games, "requests_remaining": rng.randint(0, 500)}, len(games)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=None, help="config whose [watch] file and zone to use")
    p.add_argument("--stream", default=None, help="the config's stream whose file and zone to use (default: its first)")
    p.add_argument("--file", type=Path, default=None, help="write here instead of the config's file")
    p.add_argument("--rate", type=float, default=1.0, help="fetches per second (0 = as fast as possible)")
    p.add_argument("--count", type=int, default=0, help="stop after this many fetches (0 = run until Ctrl-C)")
    p.add_argument("--size-kib", type=float, default=5.0, help="approximate RAW_API_DATA size per fetch")
    p.add_argument("--day", type=date.fromisoformat, default=None, help="stamp fetches on this day (YYYY-MM-DD)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--ledger", type=Path, default=None, help="append one JSON line per fetch written")
    args = p.parse_args(argv)

    timezone = "America/New_York"
    path = args.file
    if path is None or args.config is not None:
        try:
            config = load_config(args.config or default_config_path())
            stream = config.select(args.stream)[0]
        except UploaderError as exc:
            print(f"simulate_pipeline: {exc}", file=sys.stderr)
            return 2
        timezone = stream.day.timezone
        path = path or stream.watch.file
    path.parent.mkdir(parents=True, exist_ok=True)
    tz = pytz.timezone(timezone)
    writer = FetchWriter(path, timezone)
    rng = random.Random(args.seed)
    ledger = open(args.ledger, "a", encoding="utf-8") if args.ledger else None
    start = time.monotonic()
    base = tz.localize(datetime.combine(args.day, datetime.min.time())) if args.day else None
    n = 0
    try:
        while not args.count or n < args.count:
            data, matches = fake_api_data(rng, int(args.size_kib * 1024))
            now = base + timedelta(seconds=30 * n) if base else datetime.now(pytz.utc)
            fid = writer.append(data, matches, now=now, header={"source": "simulate_pipeline"},
                                footer={"pipeline_duration": round(rng.uniform(0.2, 3.0), 3)})
            n += 1
            if ledger:
                ledger.write(json.dumps({"fetch_id": fid, "day": now.astimezone(tz).date().isoformat(),
                                         "matches": matches}) + "\n")
                ledger.flush()
            if args.rate > 0:
                time.sleep(max(0.0, start + n / args.rate - time.monotonic()))
    except KeyboardInterrupt:
        pass
    finally:
        if ledger:
            ledger.close()
    print(f"wrote {n} fetches to {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
