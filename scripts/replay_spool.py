#!/usr/bin/env python3
"""Operator's replay: upload everything in the spool now, with progress. Same as `uploader replay`.

    scripts/replay_spool.py [--config PATH] [--day YYYY-MM-DD] [--dry-run]

Refuses while `uploader run` holds the spool (stop the service first, or let it do the work).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from uploader.cli import main  # noqa: E402  (path set just above)

if __name__ == "__main__":
    sys.exit(main(["replay", *sys.argv[1:]]))
