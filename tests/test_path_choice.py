"""The choice of append path, row by row of ARCHITECTURE.md's capability table ("What the server
honours"): ``publish.choose_plan`` is pure, so each row's path and fallback are asserted without a
server. ``test_capability_paths.py`` proves the same rows end to end on moto and Ceph RGW."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pytest

from uploader.publish.plan import (
    SMALL_LIMIT,
    AppendPath,
    Body,
    DocumentState,
    Guard,
    Layout,
    WritePlan,
    choose_plan,
)
from uploader.store.capabilities import FULL_CAPABILITIES, Capabilities

NEW_DAY = DocumentState(Layout.ABSENT)
SMALL_DAY = DocumentState(Layout.OURS, keep=40_000, held=True)  # read whole with one GET
LARGE_DAY = DocumentState(Layout.OURS, keep=SMALL_LIMIT + 1_000_000)  # only its tail read

NEW = WritePlan(AppendPath.NEW, Body.OPENING, Guard.SERVER)
NEW_UNDER_LOCK = WritePlan(AppendPath.NEW, Body.OPENING, Guard.HEAD)
SMALL_REWRITE = WritePlan(AppendPath.REWRITE, Body.HELD, Guard.SERVER)
SMALL_REWRITE_UNDER_LOCK = WritePlan(AppendPath.REWRITE, Body.HELD, Guard.HEAD)
TAIL = WritePlan(AppendPath.TAIL, Body.COPIED, Guard.SERVER, copy_checked=True)
LARGE_REWRITE = WritePlan(AppendPath.REWRITE, Body.STREAMED, Guard.SERVER)


@dataclass(frozen=True)
class Row:
    """One row of the table: the capability, the document it is used on, and the plan chosen with
    it honoured and with it missing (every other capability honoured)."""

    name: str
    state: DocumentState
    missing: dict[str, Any]  # the findings a probe records when the capability is missing
    honoured: WritePlan
    fallback: WritePlan


ROWS = [
    Row("If-None-Match: * on PUT (new day) -> plain PUT, under the single-writer lock",
        NEW_DAY, {"conditional_put": False, "etag_forms": ()}, NEW, NEW_UNDER_LOCK),
    Row("If-Match on PUT, quoted ETag (small-day rewrite) -> the unquoted form is sent, still server-checked",
        SMALL_DAY, {"etag_forms": ("unquoted",)}, SMALL_REWRITE, SMALL_REWRITE),
    Row("If-Match on PUT, unquoted ETag -> plain PUT, under the single-writer lock",
        SMALL_DAY, {"conditional_put": False, "etag_forms": ()}, SMALL_REWRITE, SMALL_REWRITE_UNDER_LOCK),
    Row("UploadPartCopy with CopySourceRange (large-day append) -> whole GET + PUT",
        LARGE_DAY, {"range_copy": False, "copy_source_if_match": False}, TAIL, LARGE_REWRITE),
    Row("UploadPartCopy with CopySourceIfMatch -> no early refusal, Complete's If-Match guards",
        LARGE_DAY, {"copy_source_if_match": False}, TAIL, replace(TAIL, copy_checked=False)),
    Row("multipart upload -> a single PUT of the whole body, streamed from a GET",
        LARGE_DAY, {"multipart": False, "range_copy": False, "complete_if_match": False, "complete_etag": False},
        TAIL, LARGE_REWRITE),
    Row("CompleteMultipartUpload with If-Match -> HEAD check just before Complete, under the lock",
        LARGE_DAY, {"complete_if_match": False}, TAIL, replace(TAIL, guard=Guard.HEAD)),
    Row("suffix Range GET (reading the tail) -> whole GET",
        LARGE_DAY, {"suffix_range": False}, TAIL, LARGE_REWRITE),
    Row("ETag in the CompleteMultipartUpload answer -> still tail, the ETag unknown (no write cache)",
        LARGE_DAY, {"complete_etag": False}, TAIL, TAIL),
]


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_each_capability_row_chooses_its_path_and_its_fallback(row: Row) -> None:
    """With the row's capability honoured the plan is the path it serves; with it missing, the
    table's fallback, which still writes the document (a capability only chooses a path)."""
    assert choose_plan(row.state, FULL_CAPABILITIES) == row.honoured
    without = replace(FULL_CAPABILITIES, **row.missing)
    assert choose_plan(row.state, without) == row.fallback
    assert row.fallback.path is not AppendPath.NONE


# The table's two server columns, as their probes record them.
MOTO = replace(FULL_CAPABILITIES, copy_source_if_match=False, complete_if_match=False)
CEPH_RGW = replace(MOTO, etag_forms=("unquoted",), complete_etag=False)


@pytest.mark.parametrize("caps", [MOTO, CEPH_RGW], ids=["moto 5.2.5", "Ceph RGW 16.2.15"])
def test_what_each_server_in_the_table_gets(caps: Capabilities) -> None:
    """Both servers create and rewrite small days server-checked, and append to large days on the
    server with the HEAD check before Complete (neither honours a condition on the copy or Complete)."""
    assert choose_plan(NEW_DAY, caps) == NEW
    assert choose_plan(SMALL_DAY, caps) == SMALL_REWRITE
    assert choose_plan(LARGE_DAY, caps) == WritePlan(AppendPath.TAIL, Body.COPIED, Guard.HEAD)


NOTHING = WritePlan(AppendPath.NONE)
STATES = [
    ("no document -> new, whether or not the edit changes anything",
     DocumentState(Layout.ABSENT, changes=False), NEW),
    ("every batch listed or the day closed already -> nothing written",
     replace(LARGE_DAY, changes=False), NOTHING),
    ("another layout (the old logger's) -> parsed and rewritten whole in ours",
     DocumentState(Layout.FOREIGN, held=True), WritePlan(AppendPath.REWRITE, Body.REENCODED, Guard.SERVER)),
    ("another layout, nothing to change -> nothing written, its layout left as it is",
     DocumentState(Layout.FOREIGN, held=True, changes=False), NOTHING),
    ("past 5 MiB but the part before the tail below it -> rewrite streamed from a GET (S3 copies no smaller part)",
     DocumentState(Layout.OURS, keep=SMALL_LIMIT - 1), LARGE_REWRITE),
    ("in memory already -> rewrite from memory, even where the server could append",
     replace(LARGE_DAY, held=True), SMALL_REWRITE),
]


@pytest.mark.parametrize(("state", "plan"), [(s, p) for _, s, p in STATES], ids=[name for name, _, _ in STATES])
def test_what_the_document_state_chooses(state: DocumentState, plan: WritePlan) -> None:
    """Beyond the capabilities, the document decides: absent, nothing to change, another layout,
    a kept part too small to copy, or a body held in memory already."""
    assert choose_plan(state, FULL_CAPABILITIES) == plan
