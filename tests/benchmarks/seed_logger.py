#!/usr/bin/env python3
# mypy: ignore-errors
# (kept as the seed wrote it, untyped: the baseline, not project code)
"""The seed design: what this project replaces, kept here only as the thing to beat.

Not part of the product and not to be improved: the benchmarks (tests/benchmarks/run.py) run
it beside the uploader, on the same S3 servers and with the same fetches. It re-creates the
original pipeline, which called for every fetch:

    subprocess.run([sys.executable, "seed_logger.py", json.dumps(log_data)])

and this script then (1) appended the fetch, bookended, to the local file, (2) on the 10th
fetch parsed the file, counted matches, read the whole daily document from S3, appended the
batch, wrote the whole document back, and cleared the local file. Daily counters are taken
from the stored document.

Environment: SEED_LOCAL_FILE, SEED_BUCKET, SEED_PREFIX, AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION.
"""
import json
import os
import re
import sys
import uuid
from datetime import datetime

import boto3
import pytz
from botocore.exceptions import ClientError

TZ = pytz.timezone("America/New_York")
MAX_FETCHES = 10
END = re.compile(r"^=== FETCH END: (\S+) \| (.+) ===$", re.MULTILINE)
BLOCK = re.compile(r"=== FETCH START: \S+ \| .+? ===\n(.*?)\n=== FETCH END: \S+ \| .+? ===", re.DOTALL)


def stamp(now):
    return now.strftime("%m/%d/%Y %I:%M:%S %p %Z")


def append_local(path, log_data, now):
    fetch_id = uuid.uuid4().hex[:6]
    raw = log_data.get("raw_data") or {}
    matches = (log_data.get("match_stats") or {}).get("total_matches", 0)
    record = {
        "FETCH_HEADER": {"fetch_id": fetch_id, "timestamp": stamp(now)},
        "RAW_API_DATA": raw,
        "FETCH_FOOTER": {"total_matches": matches, "pipeline_duration": log_data.get("pipeline_duration")},
    }
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"=== FETCH START: {fetch_id} | {stamp(now)} ===\n")
        f.write(json.dumps(record, indent=2))
        f.write(f"\n=== FETCH END: {fetch_id} | {stamp(now)} ===\n")


def upload(path, now):
    bucket = os.environ.get("SEED_BUCKET", "sports-json-logs-all")
    prefix = os.environ.get("SEED_PREFIX", "all_api_rotating_logs")
    s3 = boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL"))
    with open(path, encoding="utf-8") as f:
        text = f.read()
    fetches = [json.loads(b) for b in BLOCK.findall(text)]
    matches = sum(f.get("FETCH_FOOTER", {}).get("total_matches", 0) for f in fetches)
    key = f"{prefix}/all_api_json_log_{now.date().isoformat()}.json"
    try:
        s3.head_object(Bucket=bucket, Key=key)
        doc = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except ClientError:
        doc = {"daily_metadata": {"date": now.date().isoformat(), "total_uploads_today": 0,
                                  "total_matches_today": 0, "first_upload_today": stamp(now)},
               "uploads": []}
    meta = doc["daily_metadata"]
    meta["total_uploads_today"] += 1
    meta["total_matches_today"] += matches
    meta["last_upload"] = stamp(now)
    meta["matches_in_this_upload"] = matches
    doc["uploads"].append({"upload_sequence": meta["total_uploads_today"], "upload_timestamp": stamp(now),
                           "matches_in_upload": matches, "fetches_in_upload": len(fetches),
                           "fetch_data": fetches})
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(doc, indent=2).encode())
    open(path, "w").close()


def main():
    log_data = json.loads(sys.argv[1])
    path = os.environ.get("SEED_LOCAL_FILE", "all_api.json")
    now = datetime.now(TZ)
    append_local(path, log_data, now)
    with open(path, encoding="utf-8") as f:
        count = len(END.findall(f.read()))
    if count >= MAX_FETCHES:
        upload(path, now)


if __name__ == "__main__":
    main()
