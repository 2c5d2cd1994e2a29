"""Child process for the concurrency test: append N fetches through the real writer, flat out."""

from __future__ import annotations

import sys

from uploader.fetchlog import FetchWriter

if __name__ == "__main__":
    path, n, prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    writer = FetchWriter(path)
    for i in range(n):
        writer.append({"i": i, "pad": "z" * (i % 7) * 300}, total_matches=i % 5, fetch_id=f"{prefix}{i:05d}")
