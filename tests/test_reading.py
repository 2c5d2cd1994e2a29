"""Reading a day back: the fast path (our layout, a line at a time, orjson) and ijson's give the
same uploads, metadata and errors, for our documents, other tools' layouts, damaged documents and
gzip ones; through the real CLI on moto and Ceph RGW."""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytz
from helpers import write_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rig.s3servers import S3Server

from uploader import daily
from uploader.daily import reading
from uploader.daily.reading import DocumentError, read_document
from uploader.daily.salvage import salvage
from uploader.daily.verifier import Verifier
from uploader.local.batch import Batch

TZ = pytz.timezone("America/New_York")
DAY = date(2026, 11, 1)
NOW = datetime(2026, 11, 1, 16, 0, tzinfo=pytz.utc)
REPO = Path(__file__).resolve().parent.parent
STAMP = "11/01/2026 11:00:00 AM EST"


def _batch(seq: int, fetches: int = 3, team: str = "Atlético Nacional", pad: int = 0) -> Batch:
    bodies = [{"FETCH_HEADER": {"fetch_id": f"f{seq}-{i}", "timestamp": STAMP},
               "RAW_API_DATA": {"team": team, "odds": {"home": 2.1, "draw": 3.4, "away": -0.0}, "pad": "x" * pad},
               "FETCH_FOOTER": {"total_matches": seq + i}}
              for i in range(fetches)]
    return Batch.of(f"{seq:032x}", seq, DAY, STAMP, bodies, sum(seq + i for i in range(fetches)))


def document(uploads: int, *, closed: bool = False, **kw: Any) -> dict[str, Any]:
    """A day document as the uploader makes it, of ``uploads`` batches."""
    batches = [_batch(seq, **kw) for seq in range(1, uploads + 1)]
    doc = daily.merge_batches(daily.new_document(DAY, TZ.zone), batches, NOW, TZ).document
    return daily.close_document(doc, NOW, TZ) if closed else doc


def outcome(data: bytes, fast: bool) -> list[tuple[str, str]]:
    """All ``read_document`` hands out (as JSON text: types and key order count), then its error."""
    out: list[tuple[str, str]] = []
    try:
        for kind, value in read_document(io.BytesIO(data), fast=fast):
            out.append((kind, json.dumps(value)))
    except DocumentError as exc:
        out.append(("error", str(exc)))
    return out


def expected(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """What reading ``doc``'s bytes must hand out: its uploads in order, then its metadata."""
    return [*(("upload", json.dumps(u)) for u in doc["uploads"]), ("meta", json.dumps(doc["daily_metadata"]))]


def problems(data: bytes, fast: bool) -> list[str]:
    """What `uploader verify` reports for ``data`` (its loop in commands/verify.py), read either way."""
    checker, meta = Verifier(), None
    try:
        for kind, value in read_document(io.BytesIO(data), fast=fast):
            if kind == "upload":
                checker.add(value)
            else:
                meta = value
    except DocumentError as exc:
        checker.problems.append(f"{exc} (after {checker.uploads} uploads)")
    return checker.finish(meta, None, DAY)


@pytest.fixture
def ijson_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times the fast path handed over to ijson (a spy on ``reading.events``)."""
    calls: list[int] = []
    real = reading.events

    def spy(stream: Any, skip: int = 0) -> Iterator[tuple[str, dict[str, Any]]]:
        calls.append(skip)
        return real(stream, skip)

    monkeypatch.setattr(reading, "events", spy)
    return calls


def _unicode() -> bytes:
    data = daily.serialize(document(3, team="Ñandú 😀 \u2028 \"quoted\" \\ back"))
    # The pipeline's own bytes may escape what the uploader writes raw: both must read the same.
    return data.replace("😀".encode(), b"\\ud83d\\ude00").replace("Ñ".encode(), b"\\u00d1")


OURS: dict[str, Callable[[], bytes]] = {
    "empty day": lambda: daily.serialize(daily.new_document(DAY, TZ.zone)),
    "one upload": lambda: daily.serialize(document(1)),
    "closed day": lambda: daily.serialize(document(7, closed=True)),
    "lines across 64 KiB chunks": lambda: daily.serialize(document(60, fetches=4, pad=3000)),
    "unicode, raw and escaped": _unicode,
    "a line of 4 MiB": lambda: daily.serialize(document(3, fetches=2, pad=2 << 20)),
}


@pytest.mark.parametrize("make", OURS.values(), ids=OURS.keys())
def test_our_documents_read_the_same_on_the_fast_path(make: Callable[[], bytes], ijson_calls: list[int]) -> None:
    """Our layout is read a line at a time (ijson never called) and gives what ijson gives."""
    data = make()
    doc = json.loads(data)
    fast = outcome(data, fast=True)
    assert ijson_calls == []
    assert fast == outcome(data, fast=False) == expected(doc)


def _seed_layout() -> bytes:
    # As tests/benchmarks/seed_logger.py writes a day: metadata first, indent=2, no batch ids.
    fetches = _batch(1).fetches
    doc = {"daily_metadata": {"date": DAY.isoformat(), "total_uploads_today": 1, "total_matches_today": 6,
                              "first_upload_today": STAMP, "last_upload": STAMP, "matches_in_this_upload": 6},
           "uploads": [{"upload_sequence": 1, "upload_timestamp": STAMP, "matches_in_upload": 6,
                        "fetches_in_upload": 3, "fetch_data": fetches}]}
    return json.dumps(doc, indent=2).encode()


def _our_head_then_pretty() -> bytes:
    doc = document(3)
    entries = ",\n".join(json.dumps(u, indent=1) for u in doc["uploads"])
    return (daily.HEAD + b"\n" + entries.encode() + daily.TAIL_MARKER + json.dumps(doc["daily_metadata"]).encode()
            + b"}\n")


FOREIGN: dict[str, Callable[[], bytes]] = {
    "the seed's layout": _seed_layout,
    "ours pretty-printed": lambda: json.dumps(document(4), indent=2).encode(),
    "ours on one line": lambda: json.dumps(document(4)).encode(),
    "our first line, then pretty-printed uploads": _our_head_then_pretty,
    "our layout without the final newline": lambda: daily.serialize(document(3))[:-1],
}


@pytest.mark.parametrize("make", FOREIGN.values(), ids=FOREIGN.keys())
def test_other_layouts_read_correctly_on_the_fallback(make: Callable[[], bytes], ijson_calls: list[int]) -> None:
    """A document in any other layout is read by ijson (from where it stops being ours) and gives
    its uploads and metadata, wherever the metadata sits."""
    data = make()
    doc = json.loads(data)
    fast = outcome(data, fast=True)
    assert ijson_calls, "the fast path did not hand over"
    assert sorted(fast) == sorted(expected(doc))  # the seed's metadata comes first
    assert fast == outcome(data, fast=False)


ODD_VALUES = [
    "1234567890123456789",  # 19 digits, within 64 bits: both read it
    "9223372036854775807", "-9223372036854775808",  # ijson's edge
    "18446744073709551615",  # orjson reads 64 unsigned bits; ijson refuses: an error either way
    "123456789012345678901234567890",  # orjson would make it a float
    "0.1000000000000000055511151231257827", "1e400", "-0", "1E+2", "4.9e-324",
    '"12345678901234567890123"',  # a long digit run in a string: read as any string
    "NaN", "Infinity",  # not JSON
    '"\\ud800"', '"\\udc00x"', '"\\ud83d\\ude00"',  # lone surrogates: ijson has its own ways
    '"tab\there"', '"nul \\u0000"',  # a raw control character is not JSON
]


@pytest.mark.parametrize("raw", ODD_VALUES)
def test_values_orjson_and_ijson_read_differently_give_ijsons_result(raw: str) -> None:
    """Where orjson would read a value otherwise than ijson (long integers, lone surrogates, NaN,
    deep nesting), the document reads exactly as ijson reads it, error included."""
    line = ('{"upload_sequence":1,"batch_id":"b","fetch_data":[{"RAW_API_DATA":%s}]}' % raw).encode()
    data = daily.HEAD + b"\n" + line + daily.TAIL_MARKER + b'{"date": "2026-11-01"}}\n'
    assert outcome(data, fast=True) == outcome(data, fast=False)


def test_nesting_deeper_than_orjson_goes_is_read_by_ijson(ijson_calls: list[int]) -> None:
    """A value nested deeper than orjson reads (1024) is read by ijson, whole."""
    line = b'{"upload_sequence":1,"fetch_data":[{"RAW_API_DATA":' + b"[" * 1500 + b"]" * 1500 + b"}]}"
    data = daily.HEAD + b"\n" + line + daily.TAIL_MARKER + b'{"date": "2026-11-01"}}\n'
    (kind, upload), (last, meta) = read_document(io.BytesIO(data))
    assert ijson_calls == [0] and (kind, last, meta) == ("upload", "meta", {"date": "2026-11-01"})
    value, depth = upload["fetch_data"][0]["RAW_API_DATA"], 1
    while value:
        value, depth = value[0], depth + 1
    assert depth == 1500


_number = st.one_of(st.integers(), st.integers(-2**70, 2**70), st.floats(allow_nan=False, allow_infinity=False)).map(
    json.dumps)
_text = st.one_of(st.text().map(lambda s: json.dumps(s, ensure_ascii=False)), st.text().map(json.dumps))
_scalar = st.one_of(_number, _text, st.sampled_from(["true", "false", "null", '"\\ud800"', "NaN", "1e999"]))
_value = st.recursive(_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=4).map(lambda items: "[" + ",".join(items) + "]"),
    st.lists(st.tuples(_text, inner), max_size=4).map(lambda kv: "{" + ",".join(f"{k}:{v}" for k, v in kv) + "}")),
    max_leaves=10)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_value, max_size=4), st.lists(_value, max_size=2))
def test_any_json_in_our_layout_reads_as_ijson_reads_it(fetches: list[str], extra: list[str]) -> None:
    """Whatever JSON values the uploads and the metadata hold, both paths hand out the same."""
    lines = [f'{{"upload_sequence":{i + 1},"fetch_data":[{{"RAW_API_DATA":{v}}}]}}'.encode("utf-8", "surrogatepass")
             for i, v in enumerate(fetches)]
    meta = ('{"date": "2026-11-01", "x": [%s]}' % ",".join(extra)).encode("utf-8", "surrogatepass")
    body = b",\n".join(lines) + (b"\n" if lines else b"")
    data = daily.HEAD + b"\n" + body + b'],\n"daily_metadata": ' + meta + b"}\n"
    assert outcome(data, fast=True) == outcome(data, fast=False)


def _damaged(kind: str) -> bytes:
    data = daily.serialize(document(5))
    lines = data.split(b"\n")
    if kind == "a truncated line":
        return b"\n".join(lines[:3]) + b"\n" + lines[3][: len(lines[3]) // 2]
    if kind == "a missing comma":
        lines[2] = lines[2].rstrip(b",")
        return b"\n".join(lines)
    if kind == "a comma after the last upload":
        lines[5] += b","
        return b"\n".join(lines)
    if kind == "garbage after the end":
        return data + b"garbage"
    if kind == "a second document after the end":
        return data + data
    if kind == "cut short after the uploads":
        return data[: data.index(daily.TAIL_MARKER) + 4]
    raise AssertionError(kind)


DAMAGE = ["a truncated line", "a missing comma", "a comma after the last upload", "garbage after the end",
          "a second document after the end", "cut short after the uploads"]


@pytest.mark.parametrize("kind", DAMAGE)
def test_damaged_documents_are_reported_by_verify_as_before(kind: str) -> None:
    """A damaged document gives verify the same uploads and the same error, word for word, on both
    paths: the fast path checks no less than ijson did."""
    data = _damaged(kind)
    found = problems(data, fast=True)
    assert found == problems(data, fast=False)
    assert any("not valid JSON" in p for p in found), found


def test_random_damage_is_reported_as_ijson_reports_it() -> None:
    """Bytes cut, changed, inserted or removed anywhere in a document of several 64 KiB chunks:
    both paths hand out the same uploads, metadata and error message."""
    rng = random.Random(20)
    sound = daily.serialize(document(36, fetches=2, pad=3000))
    assert len(sound) > 3 * 64 * 1024
    for _ in range(120):
        data = bytearray(sound)
        at = rng.randrange(len(data))
        match rng.randrange(4):
            case 0:
                del data[at:]
            case 1:
                data[at] = rng.randrange(256)
            case 2:
                data[at:at] = rng.choice([b"x", b",", b"\n", b"}", b"]", b" ", b"\n{}", b"12345678901234567890"])
            case _:
                del data[at:at + rng.randrange(1, 40)]
        assert outcome(bytes(data), fast=True) == outcome(bytes(data), fast=False), f"damage at {at}"


def test_a_line_longer_than_the_limit_is_read_by_ijson(monkeypatch: pytest.MonkeyPatch,
                                                        ijson_calls: list[int]) -> None:
    """A line past the fast path's limit (bounded memory) is left to ijson, with the same result."""
    monkeypatch.setattr(reading, "_LINE_LIMIT", 100)  # looked at where a line runs past a 1 MiB read
    data = daily.serialize(document(150, fetches=2, pad=4000))
    assert len(data) > reading._READ
    assert outcome(data, fast=True) == expected(json.loads(data))
    assert len(ijson_calls) == 1


# -- gzip ---------------------------------------------------------------------------------------


def _padding_member(extra_bytes: int = 32 * 1024 - 64) -> bytes:
    """An empty gzip member whose header carries an extra field (FEXTRA) of ``extra_bytes``."""
    extra = b"AP" + struct.pack("<H", extra_bytes) + bytes(extra_bytes)
    header = b"\x1f\x8b\x08\x04\x00\x00\x00\x00\x00\xff" + struct.pack("<H", len(extra)) + extra
    return header + b"\x03\x00" + struct.pack("<II", 0, 0)  # an empty deflate block, CRC and size 0


def _members(data: bytes, cuts: list[int]) -> bytes:
    """``data`` as consecutive gzip members, cut at ``cuts``."""
    at = sorted({0, len(data), *cuts})
    return b"".join(gzip.compress(data[a:b]) for a, b in zip(at, at[1:], strict=False))


def _gzip_c(data: bytes) -> bytes:
    return subprocess.run(["gzip", "-c"], input=data, capture_output=True, check=True).stdout


GZIPPED: dict[str, Callable[[bytes], bytes]] = {
    "gzip -c": _gzip_c,
    "several members": lambda d: _members(d, [1, 100, len(d) // 3, len(d) // 2]),
    "a padding member first": lambda d: _padding_member() * 3 + _members(d, [len(d) // 2]),
    "zero bytes after the members": lambda d: gzip.compress(d) + bytes(10),
}


@pytest.mark.parametrize("compress", GZIPPED.values(), ids=GZIPPED.keys())
def test_gzip_documents_read_as_the_plain_one(compress: Callable[[bytes], bytes]) -> None:
    """A gzip document (one member or many, padding members first) reads exactly as its plain form,
    on both paths, and verify finds the same counters."""
    plain = daily.serialize(document(40, fetches=3, pad=1500, closed=True))
    data = compress(plain)
    assert data[:2] == b"\x1f\x8b" and gzip.decompress(data) == plain
    assert outcome(data, fast=True) == outcome(data, fast=False) == outcome(plain, fast=True)
    assert problems(data, fast=True) == [] == problems(plain, fast=True)
    assert salvage(io.BytesIO(data)) == salvage(io.BytesIO(plain))


GZIP_DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "cut short": lambda g: g[: len(g) * 2 // 3],
    "a wrong checksum": lambda g: g[:-8] + bytes([g[-8] ^ 0x55]) + g[-7:],
    "garbage after the members": lambda g: g + b"garbage",
}


@pytest.mark.parametrize("damage", GZIP_DAMAGE.values(), ids=GZIP_DAMAGE.keys())
def test_damaged_gzip_is_an_error_on_both_paths_alike(damage: Callable[[bytes], bytes]) -> None:
    """Gzip that is cut short, fails its checksum or has garbage after it: the same uploads, then
    the same DocumentError, on both paths."""
    data = damage(_members(daily.serialize(document(30, pad=1500)), [30_000, 90_000]))
    fast = outcome(data, fast=True)
    assert fast == outcome(data, fast=False)
    assert fast[-1][0] == "error" and "gzip" in fast[-1][1]


def test_salvage_of_a_cut_gzip_keeps_its_complete_uploads() -> None:
    """Repair's salvage of a gzip document cut short keeps every upload inflated before the cut."""
    doc = document(30, pad=1500)
    data = _members(daily.serialize(doc), [40_000, 80_000, 120_000])
    found = salvage(io.BytesIO(data[: len(data) * 2 // 3]))
    assert 0 < len(found.entries) < len(doc["uploads"])
    assert found.entries == doc["uploads"][: len(found.entries)]
    assert any("gzip" in d for d in found.damage) and not found.intact


# -- the real CLI, on moto and Ceph RGW ------------------------------------------------------------


def cli(*args: str, config: Path) -> subprocess.CompletedProcess[str]:
    """One `uploader` command as an operator runs it."""
    return subprocess.run([sys.executable, "-m", "uploader.cli", *args, "--config", str(config)],
                          capture_output=True, text=True, timeout=180, cwd=REPO, env=dict(os.environ), check=False)


def test_the_cli_reads_plain_gzip_and_damaged_days(tmp_path: Path, s3_server: S3Server, bucket: str) -> None:
    """Days uploaded with boto3: `verify --all` passes a plain and a gzip day and reports a damaged
    plain one as ijson does; `export` reads the gzip day; `repair --dry-run` salvages a cut gzip."""
    days = [DAY + timedelta(days=i) for i in range(4)]
    docs = [document(12, fetches=2, pad=2000, closed=True) for _ in days]
    for d, doc in zip(days, docs, strict=True):
        doc["daily_metadata"]["date"] = d.isoformat()
    plain = [daily.serialize(doc) for doc in docs]
    cut = _members(plain[3], [20_000, 40_000])
    bodies = [plain[0], _padding_member() + _members(plain[1], [50_000]), plain[2][:-30_000], cut[: len(cut) * 2 // 3]]
    for d, doc, body in zip(days, docs, bodies, strict=True):
        s3_server.admin.put_object(Bucket=bucket, Key=daily.day_key("logs", d), Body=body,
                                   Metadata=daily.user_metadata(doc["daily_metadata"]))
    config = write_config(tmp_path, s3=(s3_server.endpoint, bucket))

    verified = cli("verify", "--all", config=config)
    assert verified.returncode == 1, verified.stdout + verified.stderr
    for d in days[:2]:
        assert f"{d}  OK  12 uploads, 24 fetches" in verified.stdout
    checker = Verifier()
    with pytest.raises(DocumentError) as slow:
        for kind, value in read_document(io.BytesIO(bodies[2]), fast=False):
            checker.add(value)
    assert f"{slow.value} (after {checker.uploads} uploads); `uploader repair {days[2]}` rebuilds it" in verified.stdout
    assert f"{days[3]}  PROBLEMS" in verified.stdout and "the gzip data ends inside a member" in verified.stdout

    exported = cli("export", days[1].isoformat(), config=config)
    assert exported.returncode == 0, exported.stderr
    ids = [json.loads(line)["FETCH_HEADER"]["fetch_id"] for line in exported.stdout.splitlines()]
    assert ids == [f["FETCH_HEADER"]["fetch_id"] for u in docs[1]["uploads"] for f in u["fetch_data"]]

    repaired = cli("repair", days[3].isoformat(), "--dry-run", config=config)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    kept = len(salvage(io.BytesIO(bodies[3])).entries)
    assert 0 < kept < 12 and f"uploads kept from the bucket: {kept}" in repaired.stdout
