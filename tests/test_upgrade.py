"""Upgrading from the first release (0.1.0): what it left on disk is taken over by today's CLI.

The states in tests/corpus/upgrade-0.1.0/ were written by 0.1.0's own code (its README says how):
a spool of batches in 0.1.0's format with records not yet cut, and a cut killed right after its
0.1.0 journal. Each test copies one into a temporary install, runs the CLI in a subprocess as an
operator would after upgrading, and checks the store holds every fetch the pipeline wrote exactly
once, in order, unaltered, with exact counters, and that nothing is left behind in the spool.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import SERVERS, terminate, uploader, wait_for, write_config, write_streams_config

REPO = Path(__file__).resolve().parent.parent
CORPUS = Path(__file__).resolve().parent / "corpus" / "upgrade-0.1.0"
DOC_NAME = re.compile(r"all_api_json_log_(\d{4}-\d{2}-\d{2})\.json")
RECORD = re.compile(rb"=== FETCH START: (\S+) \| [^\n]* ===\n(.*?)\n=== FETCH END: \1 \| [^\n]* ===\n", re.S)



@dataclass
class Install:
    """A copy of one 0.1.0 state under tmp_path, and where its day documents land."""

    root: Path
    expected: dict[str, Any]
    written: dict[str, dict[str, Any]]  # every fetch 0.1.0 left, by id, as 0.1.0 holds it
    spooled: list[str]  # ids in its batch files, committed or staged
    tail: bytes  # the unfinished record at the end of the local file
    documents: Callable[[], dict[str, dict[str, Any]]]  # day -> parsed document, as the store holds them

    def days_of(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        """``expected.json``'s days narrowed to ``ids``: per day, those fetch ids and their matches."""
        out = {}
        for day, want in self.expected["days"].items():
            kept = [i for i in want["fetch_ids"] if i in ids]
            if kept:
                out[day] = {"fetch_ids": kept,
                            "matches": sum(self.written[i]["FETCH_FOOTER"]["total_matches"] for i in kept)}
        return out

    @property
    def spool(self) -> Path:
        return self.root / "data" / "spool"

    @property
    def local_file(self) -> Path:
        return self.root / "data" / "all_api.json"


def what_0_1_0_left(state: Path) -> tuple[dict[str, dict[str, Any]], list[str], list[str], bytes]:
    """The fetches in a 0.1.0 state (read by hand, not by the uploader): by id, the ids in its
    batch files (committed and staged), the ids of complete records in its local file, the tail."""
    written: dict[str, dict[str, Any]] = {}
    spooled: list[str] = []
    for path in sorted((state / "data" / "spool" / "batches").iterdir()):
        batch = json.loads(path.read_bytes())
        assert "format" not in batch, f"{path.name} is not in 0.1.0's batch format"
        assert batch["fetch_ids"] == [f["FETCH_HEADER"]["fetch_id"] for f in batch["fetches"]]
        spooled.extend(batch["fetch_ids"])
        written.update(zip(batch["fetch_ids"], batch["fetches"]))
    data = (state / "data" / "all_api.json").read_bytes()
    records = list(RECORD.finditer(data))
    in_file = [m[1].decode() for m in records]
    for m in records:
        written.setdefault(m[1].decode(), json.loads(m[2]))
    return written, spooled, in_file, data[records[-1].end():]


def install(tmp_path: Path, state: str, backend: str, request: pytest.FixtureRequest,
            batch_size: int | None = None) -> Install:
    """Copy a 0.1.0 state into tmp_path and write today's config for it on ``backend`` (with
    0.1.0's batch size unless ``batch_size`` is given)."""
    source = CORPUS / state
    shutil.copytree(source / "data", tmp_path / "data")
    expected = json.loads((source / "expected.json").read_text())
    written, spooled, _, tail = what_0_1_0_left(source)
    sections = {"watch": {"batch_size": batch_size or expected["batch_size"]},
                "day": {"timezone": expected["timezone"]}}
    if backend == "directory":
        write_config(tmp_path, **sections)
        folder = tmp_path / "data" / "bucket" / "logs"

        def documents() -> dict[str, dict[str, Any]]:
            found = sorted(folder.glob("all_api_json_log_*.json")) if folder.is_dir() else []
            return {p.name[len("all_api_json_log_"):-len(".json")]: json.loads(p.read_bytes()) for p in found}
    else:
        server = request.getfixturevalue(f"{backend}_server")
        bucket = server.new_bucket()
        write_config(tmp_path, s3=(server.endpoint, bucket), **sections)

        def documents() -> dict[str, dict[str, Any]]:
            out = {}
            for key in server.keys(bucket, "logs/"):
                m = DOC_NAME.fullmatch(key.removeprefix("logs/"))
                if m:
                    out[m[1]] = json.loads(server.admin.get_object(Bucket=bucket, Key=key)["Body"].read())
            return out
    return Install(tmp_path, expected, written, spooled, tail, documents)


def all_stored_and_closed(inst: Install) -> bool:
    """Every expected day has its document, holding at least the day's fetches (more is a failure
    the assertions after the wait report), closed."""
    docs = inst.documents()
    return all(day in docs and docs[day]["daily_metadata"]["total_fetches_today"] >= len(want["fetch_ids"])
               and docs[day]["daily_metadata"]["closed"] for day, want in inst.expected["days"].items())


def run_service_until_done(inst: Install) -> str:
    """`uploader run` until every fetch is stored and each past day closed, then SIGTERM; its log."""
    log = inst.root / "run.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "uploader.cli", "run", "--config",
                                 str(inst.root / "config.toml")],
                                stdout=subprocess.DEVNULL, stderr=err, cwd=REPO)
        try:
            wait_for(lambda: proc.poll() is not None or all_stored_and_closed(inst), timeout=120,
                     what="every fetch stored and every day closed by `uploader run`")
        finally:
            code = terminate(proc)
    text = log.read_text()
    assert code == 0, text
    assert "Traceback" not in text
    return text


def assert_stored_exactly_once(inst: Install, days: dict[str, dict[str, Any]] | None = None,
                               closed: bool = True) -> None:
    """The store holds exactly ``days`` (default: everything the pipeline wrote): each fetch once,
    in the order written, as 0.1.0 held it, with counters equal to the fetches."""
    days = inst.expected["days"] if days is None else days
    docs = inst.documents()
    assert sorted(docs) == sorted(days)
    for day, want in days.items():
        uploads, meta = docs[day]["uploads"], docs[day]["daily_metadata"]
        fetches = [f for u in uploads for f in u["fetch_data"]]
        assert [f["FETCH_HEADER"]["fetch_id"] for f in fetches] == want["fetch_ids"], day
        assert fetches == [inst.written[i] for i in want["fetch_ids"]], f"{day}: a fetch was altered"
        for u in uploads:
            assert u["fetches_in_upload"] == len(u["fetch_data"])
            assert u["matches_in_upload"] == sum(f["FETCH_FOOTER"]["total_matches"] for f in u["fetch_data"])
        assert [u["upload_sequence"] for u in uploads] == list(range(1, len(uploads) + 1))
        assert meta["date"] == day and meta["timezone"] == inst.expected["timezone"]
        assert meta["total_fetches_today"] == len(want["fetch_ids"])
        assert meta["total_matches_today"] == want["matches"]
        assert meta["total_uploads_today"] == len(uploads)
        listed = "".join(u["batch_id"] + "\n" for u in uploads).encode()
        assert meta["batch_ids_sha256"] == hashlib.sha256(listed).hexdigest()
        assert "batch_ids" not in meta and len({u["batch_id"] for u in uploads}) == len(uploads)
        assert meta["closed"] is closed
        assert uploader("verify", day, "--config", str(inst.root / "config.toml")).returncode == 0


def assert_nothing_left_behind(inst: Install) -> None:
    """The spool's batches folder is empty, no journal remains, and the local file holds only the
    unfinished record (never stored)."""
    assert sorted(p.name for p in (inst.spool / "batches").iterdir()) == []
    assert not (inst.spool / "journal.json").exists() and not (inst.spool / "journal.kept").exists()
    assert inst.local_file.read_bytes() == inst.tail
    assert inst.tail.startswith(f"=== FETCH START: {inst.expected['unfinished_fetch_id']} ".encode())


def test_fixtures_hold_what_their_readme_says():
    """The 0.1.0 states hold every fetch the pipeline wrote, in batch files of 0.1.0's format and
    the local file, and the interrupted one a 0.1.0 journal with its staged batches."""
    for state in ("waiting", "interrupted"):
        expected = json.loads((CORPUS / state / "expected.json").read_text())
        written, spooled, in_file, tail = what_0_1_0_left(CORPUS / state)
        every_id = [i for want in expected["days"].values() for i in want["fetch_ids"]]
        assert sorted(written) == sorted(every_id)
        assert tail and expected["unfinished_fetch_id"] not in written
        if state == "waiting":
            assert sorted(spooled + in_file) == sorted(every_id)  # each in exactly one place
            assert len(spooled) == 33 and len(in_file) == 2
    spool = CORPUS / "interrupted" / "data" / "spool"
    journal = json.loads((spool / "journal.json").read_text())
    assert "rest_digest" in journal and not {"tail_len", "tail_digest", "inode"} & set(journal)
    assert sorted(p.name for p in (spool / "batches").glob("*.pending")) == \
        sorted(Path(n).name + ".pending" for n in journal["pending"])


@pytest.mark.parametrize("backend", ["directory", *SERVERS])
def test_waiting_spool_is_replayed_and_uncut_records_follow(tmp_path, request, backend):
    """After upgrading, `replay` uploads every batch 0.1.0 left waiting and `run` then cuts and
    uploads the records 0.1.0 had not cut, every fetch stored exactly once with exact counters."""
    inst = install(tmp_path, "waiting", backend, request)
    config = str(inst.root / "config.toml")

    dry = uploader("replay", "--dry-run", "--config", config)
    assert dry.returncode == 0, dry.stderr
    assert "2026-11-20" in dry.stdout and "2026-11-21" in dry.stdout and "4 batch" in dry.stdout

    done = uploader("replay", "--config", config)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert sorted((inst.spool / "batches").iterdir()) == []
    assert_stored_exactly_once(inst, inst.days_of(inst.spooled), closed=False)  # not the file's, yet

    run_service_until_done(inst)
    assert_stored_exactly_once(inst)
    assert_nothing_left_behind(inst)


@pytest.mark.parametrize("first", ["run", "replay"])
@pytest.mark.parametrize("backend", ["directory", *SERVERS])
def test_cut_killed_after_its_0_1_0_journal_is_finished(tmp_path, request, backend, first):
    """After upgrading, `run` (whether or not `replay` went first) finishes the cut 0.1.0 was
    killed in after journaling, and every fetch is stored exactly once with exact counters."""
    # batch_size changed on upgrade (10 -> 3): a cut redone from the file instead of finished from
    # the journal would group the fetches anew, under new batch ids, and store them twice.
    inst = install(tmp_path, "interrupted", backend, request, batch_size=3)
    if first == "replay":
        done = uploader("replay", "--config", str(inst.root / "config.toml"))
        assert done.returncode == 0, done.stderr
        # Only what 0.1.0 had committed is uploaded: the staged batches wait for its cut to finish.
        committed = [i for p in (CORPUS / "interrupted" / "data" / "spool" / "batches").glob("*.json")
                     for i in json.loads(p.read_bytes())["fetch_ids"]]
        assert_stored_exactly_once(inst, inst.days_of(committed), closed=False)

    log = run_service_until_done(inst)
    assert "cut_recovered" in log
    assert_stored_exactly_once(inst)
    assert_nothing_left_behind(inst)


def test_0_1_0_config_loads_unchanged(tmp_path):
    """0.1.0's shipped config.toml, byte for byte, is accepted by today's CLI, and `replay` with it
    uploads a 0.1.0 spool into the directory bucket it names."""
    shutil.copytree(CORPUS / "waiting", tmp_path / "install")
    root = tmp_path / "install"
    config = str(root / "config.toml")
    assert "[metrics]" not in (root / "config.toml").read_text()  # 0.1.0's: written before it existed

    for args in (("replay", "--dry-run"), ("replay",), ("status", "--json")):
        res = uploader(*args, "--config", config)
        assert res.returncode == 0, (args, res.stderr)
        assert "Traceback" not in res.stderr
    status = json.loads(res.stdout)
    assert status["spool_depth"] == 0
    assert Path(status["spool"]).resolve() == (root / "data" / "spool").resolve()

    _, spooled, _, _ = what_0_1_0_left(CORPUS / "waiting")
    folder = root / "data" / "bucket" / "all_api_rotating_logs"  # 0.1.0's prefix and bucket folder
    stored: list[str] = []
    for path in sorted(folder.glob("all_api_json_log_*.json")):
        document = json.loads(path.read_bytes())
        fetches = [f for u in document["uploads"] for f in u["fetch_data"]]
        stored.extend(f["FETCH_HEADER"]["fetch_id"] for f in fetches)
        meta = document["daily_metadata"]
        assert meta["total_fetches_today"] == len(fetches)
        assert meta["total_matches_today"] == sum(f["FETCH_FOOTER"]["total_matches"] for f in fetches)
        day = path.name[len("all_api_json_log_"):-len(".json")]
        assert uploader("verify", day, "--config", config).returncode == 0
    assert stored == spooled
    assert sorted((root / "data" / "spool" / "batches").iterdir()) == []


@pytest.mark.parametrize("backend", ["directory", *SERVERS])
def test_waiting_0_1_0_spool_taken_over_by_a_mirrored_stream(tmp_path, request, backend):
    """The 0.1.0 spool, named as the spool of a stream that ships to its old store and to a new
    mirror: `run` uploads every batch 0.1.0 left waiting, and the records it had not cut, to both,
    each fetch once in each, and empties the spool only once both have them."""
    inst = install(tmp_path, "waiting", backend, request)
    storage = tomllib.loads((inst.root / "config.toml").read_text())["storage"]
    old = ({"backend": "directory", "path": storage["directory"]["path"]} if storage["backend"] == "directory" else
           {"backend": "s3", "endpoint": storage["s3"]["endpoint_url"], "bucket": storage["s3"]["bucket"]})
    write_streams_config(inst.root, {"all_api": ["old", "mirror"]},
                         {"old": old, "mirror": {"backend": "directory", "path": "data/mirror"}},
                         day={"timezone": inst.expected["timezone"]},
                         streams__all_api={"spool": "data/spool", "prefix": "logs",
                                           "batch_size": inst.expected["batch_size"]})
    old_documents = inst.documents

    def mirror_documents() -> dict[str, dict[str, Any]]:
        folder = inst.root / "data" / "mirror" / "logs"
        found = sorted(folder.glob("all_api_json_log_*.json")) if folder.is_dir() else []
        return {p.name[len("all_api_json_log_"):-len(".json")]: json.loads(p.read_bytes()) for p in found}

    inst.documents = lambda: {**old_documents(), **{f"m{d}": v for d, v in mirror_documents().items()}}
    expected = dict(inst.expected["days"])
    inst.expected = {**inst.expected, "days": {**expected, **{f"m{d}": v for d, v in expected.items()}}}
    run_service_until_done(inst)
    for documents in (old_documents, mirror_documents):
        inst.documents = documents
        inst.expected = {**inst.expected, "days": expected}
        assert_stored_exactly_once(inst)
    assert_nothing_left_behind(inst)
    assert not list((inst.spool / "delivered").iterdir())
