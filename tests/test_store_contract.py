"""One contract for every Store backend, run against the directory bucket, moto and Ceph RGW."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import SERVERS, make_s3_store, store_factory_for
from rig.s3servers import S3Server

from uploader.errors import ObjectNotFound, PreconditionFailed, StoreRejected, StoreUnavailable
from uploader.store import PART_SIZE, Store, normalize_etag
from uploader.store.capabilities import MIN_PART_SIZE
from uploader.store.directory import DirectoryStore
from uploader.store.s3 import S3Store

KEY = "logs/all_api_json_log_2025-07-10.json"


@pytest.fixture(params=["directory", *SERVERS, "ceph-sse-c"])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Store]:
    """The suite's backends, and Ceph RGW over https with SSE-C: the contract holds encrypted too."""
    return store_factory_for(request, tmp_path)


@pytest.mark.parametrize("backend", [DirectoryStore, S3Store], ids=["directory", "s3"])
def test_each_backend_has_every_method_of_the_protocol(backend: type) -> None:
    """Each backend has every Store method, with the protocol's parameters (read from the classes:
    no server needed)."""
    methods = [name for name, value in vars(Store).items() if callable(value) and not name.startswith("_")]
    assert methods
    for name in methods:
        expected = list(inspect.signature(getattr(Store, name)).parameters)
        assert list(inspect.signature(getattr(backend, name)).parameters) == expected, name


def test_head_of_missing_key_is_none(store: Store) -> None:
    """HEAD of a key that does not exist answers None, not an error."""
    assert store.head(KEY) is None


def test_get_of_missing_key_raises_not_found(store: Store) -> None:
    """GET of a missing key raises ObjectNotFound."""
    with pytest.raises(ObjectNotFound):
        store.get(KEY)


def test_put_then_head_and_get_round_trip(store: Store) -> None:
    """A PUT is read back byte for byte, with a quoted md5 ETag, its size and user metadata."""
    body = b'{"hello": "world"}\n'
    etag = store.put(KEY, body, {"total-uploads": "3", "closed": "false"})
    assert etag == f'"{hashlib.md5(body).hexdigest()}"'
    info = store.head(KEY)
    assert info is not None
    assert (info.size, info.etag, info.metadata) == (len(body), etag, {"total-uploads": "3", "closed": "false"})
    data, got = store.get(KEY)
    assert data == body and got.etag == etag and got.size == len(body)


def test_suffix_get_returns_last_bytes_and_whole_size(store: Store) -> None:
    """A suffix GET returns only the last N bytes, and the info still gives the whole size."""
    body = bytes(range(256)) * 4
    store.put(KEY, body, {})
    data, info = store.get(KEY, suffix=100)
    assert data == body[-100:] and info.size == len(body)
    data, info = store.get(KEY, suffix=10_000)
    assert data == body


def test_span_get_returns_those_bytes_and_whole_size(store: Store) -> None:
    """A span GET returns bytes [start, end), cut at the object's end, with the whole size."""
    body = bytes(range(256)) * 4
    etag = store.put(KEY, body, {"v": "1"})
    data, info = store.get(KEY, span=(10, 20))
    assert data == body[10:20] and (info.size, info.etag, info.metadata) == (len(body), etag, {"v": "1"})
    assert store.get(KEY, span=(1000, 5000))[0] == body[1000:]
    with pytest.raises(ValueError):
        store.get(KEY, span=(5, 5))


def test_if_none_match_refuses_existing_and_accepts_new(store: Store) -> None:
    """If-None-Match refuses to overwrite an existing key and creates a new one."""
    store.put(KEY, b"one", {}, if_none_match=True)
    with pytest.raises(PreconditionFailed):
        store.put(KEY, b"two", {}, if_none_match=True)
    assert store.get(KEY)[0] == b"one"


@pytest.mark.parametrize("quoted", [True, False])
def test_if_match_refuses_stale_and_accepts_current_etag(store: Store, quoted: bool) -> None:
    """If-Match with a stale ETag is refused; the current ETag, quoted or not, is accepted."""
    first = store.put(KEY, b"one", {})
    second = store.put(KEY, b"two", {}, if_match=first if quoted else first.strip('"'))
    with pytest.raises(PreconditionFailed):
        store.put(KEY, b"three", {}, if_match=first)
    assert store.get(KEY)[0] == b"two" and store.head(KEY).etag == second  # type: ignore[union-attr]


def test_if_match_on_missing_key_fails(store: Store) -> None:
    """If-Match on a key that does not exist does not create it."""
    with pytest.raises((PreconditionFailed, ObjectNotFound)):
        store.put(KEY, b"x", {}, if_match='"abc"')
    assert store.head(KEY) is None


def test_delete_removes_and_is_idempotent(store: Store) -> None:
    """DELETE removes the object; deleting a missing key is fine."""
    store.put(KEY, b"x", {})
    store.delete(KEY)
    store.delete(KEY)
    assert store.head(KEY) is None


def test_list_returns_sorted_keys_under_prefix(store: Store) -> None:
    """LIST returns the keys under a prefix, sorted, and nothing else."""
    for key in ("logs/b.json", "logs/a.json", "logs/quarantine/q1", "other/c.json"):
        store.put(key, b"x", {})
    assert store.list("logs/") == ["logs/a.json", "logs/b.json", "logs/quarantine/q1"]
    assert store.list("nothing/") == []


def test_compose_keeps_body_and_writes_new_tail(store: Store) -> None:
    """compose(keep) yields old[:keep] + pieces, with the new metadata and a fresh ETag."""
    body = b"a" * MIN_PART_SIZE + b"OLD-TAIL"
    etag = store.put(KEY, body, {"v": "1"})
    new_etag = store.compose(KEY, MIN_PART_SIZE, [b"NEW-", b"TAIL!"], {"v": "2"}, if_match=etag)
    data, info = store.get(KEY)
    assert data == b"a" * MIN_PART_SIZE + b"NEW-TAIL!"
    assert info.metadata == {"v": "2"} and info.etag != etag
    assert new_etag is None or new_etag == info.etag


def test_compose_refuses_a_stale_etag(store: Store) -> None:
    """compose with an ETag that is no longer current changes nothing."""
    body = b"b" * MIN_PART_SIZE + b"TAIL"
    stale = store.put(KEY, body, {})
    store.put(KEY, body + b"more", {})
    with pytest.raises(PreconditionFailed):
        store.compose(KEY, MIN_PART_SIZE, [b"X"], {}, if_match=stale)
    with pytest.raises(PreconditionFailed):
        store.compose(KEY, 0, [b"y" * (PART_SIZE + 1)], {}, if_match=stale)
    assert store.get(KEY, suffix=8)[0] == b"TAILmore"


def test_compose_streams_pieces_larger_than_a_part(store: Store) -> None:
    """Many pieces adding up to several parts make exactly their concatenation, from scratch or
    after a kept body; If-None-Match refuses an existing key on that path too."""
    pieces = [bytes([65 + i % 26]) * (1 << 20) for i in range(2 * PART_SIZE // (1 << 20) + 3)]
    store.compose(KEY, 0, iter(pieces), {"n": "1"}, if_none_match=True)
    assert store.get(KEY)[0] == b"".join(pieces)
    with pytest.raises(PreconditionFailed):
        store.compose(KEY, 0, iter(pieces), {}, if_none_match=True)
    etag = store.head(KEY).etag  # type: ignore[union-attr]
    store.compose(KEY, PART_SIZE, iter(pieces[:9]), {"n": "2"}, if_match=etag)
    data, info = store.get(KEY)
    assert data == b"".join(pieces)[:PART_SIZE] + b"".join(pieces[:9]) and info.metadata == {"n": "2"}


def test_compose_refuses_a_kept_part_s3_cannot_copy(store: Store) -> None:
    """A kept body below the store's smallest copy (S3: 5 MiB) cannot be copied server-side: a
    caller error, nothing written. The directory copies any size."""
    store.put(KEY, b"c" * 100, {})
    if store.capabilities().min_copy == 0:
        store.compose(KEY, 50, [b"x"], {})
        assert store.get(KEY)[0] == b"c" * 50 + b"x"
        return
    assert store.capabilities().min_copy == MIN_PART_SIZE
    with pytest.raises(ValueError):
        store.compose(KEY, 50, [b"x"], {})
    assert store.get(KEY)[0] == b"c" * 100


def test_capabilities_are_probed_and_remembered(store: Store) -> None:
    """Asking twice probes once, and a probe leaves no object behind."""
    caps = store.capabilities()
    assert store.capabilities() is caps
    assert not [k for k in store.list("") if ".uploader-check" in k]


# What each real server was found to honour (docs/ARCHITECTURE.md has the table and why).
OBSERVED = {
    "moto": {"conditional_put": True, "etag_forms": ("quoted", "unquoted"), "multipart": True, "range_copy": True,
             "copy_source_if_match": False, "complete_if_match": False, "suffix_range": True,
             "complete_etag": True},
    "ceph": {"conditional_put": True, "etag_forms": ("unquoted",), "multipart": True, "range_copy": True,
             "copy_source_if_match": False, "complete_if_match": False, "suffix_range": True,
             "complete_etag": False},
}


def test_probe_finds_what_each_server_honours(s3_server: S3Server, bucket: str) -> None:
    """moto and Ceph RGW each get the findings their answers support, conclusive, with reasons."""
    caps = make_s3_store(s3_server, bucket).capabilities()
    found = {name: getattr(caps, name) for name in OBSERVED[s3_server.name]}
    assert found == OBSERVED[s3_server.name]
    assert caps.conclusive and caps.server_side_append
    assert set(caps.notes) == {name for name, value in found.items() if value is False}
    assert s3_server.keys(bucket) == [] and not s3_server.admin.list_multipart_uploads(Bucket=bucket).get("Uploads")


def test_s3_missing_bucket_is_rejected_with_what_to_fix(s3_server: S3Server) -> None:
    """A bucket that does not exist is a permanent error that names the bucket and the fix."""
    store = make_s3_store(s3_server, "no-such-bucket-here")
    with pytest.raises(StoreRejected) as info:
        store.put(KEY, b"x", {})
    assert "no-such-bucket-here" in str(info.value) and "storage.s3.bucket" in str(info.value)


def test_s3_closed_port_is_unavailable(unused_port: int) -> None:
    """A closed port is a transient error that names the endpoint."""
    store = S3Store("bucket", endpoint_url=f"http://127.0.0.1:{unused_port}", region="us-east-1", max_attempts=1)
    with pytest.raises(StoreUnavailable) as info:
        store.head(KEY)
    assert f"127.0.0.1:{unused_port}" in str(info.value)


def test_s3_etag_normalisation_accepts_both_forms() -> None:
    """ETags come back quoted whichever form they were given in."""
    assert normalize_etag("abc") == normalize_etag('"abc"') == '"abc"'


def test_directory_store_survives_stale_sidecar(tmp_path: Any) -> None:
    """If a crash left the sidecar describing older bytes, the ETag is recomputed from the file."""
    store = DirectoryStore(tmp_path)
    store.put(KEY, b"old", {})
    (tmp_path / KEY).write_bytes(b"new bytes")
    info = store.head(KEY)
    assert info is not None and info.etag == f'"{hashlib.md5(b"new bytes").hexdigest()}"'


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("SlowDown", 503, StoreUnavailable),
        ("InternalError", 500, StoreUnavailable),
        ("502", 502, StoreUnavailable),
        ("AccessDenied", 403, StoreRejected),
        ("InvalidAccessKeyId", 403, StoreRejected),
        ("SignatureDoesNotMatch", 403, StoreRejected),
        ("NoSuchBucket", 404, StoreRejected),
        ("XAmzContentSHA256Mismatch", 400, StoreRejected),
        ("NoSuchKey", 404, ObjectNotFound),
        ("PreconditionFailed", 412, PreconditionFailed),
        ("ConditionalRequestConflict", 409, PreconditionFailed),
    ],
)
def test_s3_errors_are_translated_at_the_boundary(code: str, status: int, expected: type) -> None:
    """Each S3 error code becomes the uploader's transient, permanent, not-found or conflict error."""
    from botocore.exceptions import ClientError

    store = S3Store("bucket", endpoint_url="http://127.0.0.1:9", region="us-east-1")
    error = ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")
    with pytest.raises(expected) as info, store._translate("PUT", "k"):
        raise error
    assert info.value.__cause__ is error
    assert expected is ObjectNotFound or code in str(info.value)


def test_parts_have_no_empty_tail() -> None:
    """A body that fills its last part exactly gets no empty part after it (a single part of
    exactly PART_SIZE stays one PUT); only an empty body is one empty part."""
    from uploader.store.s3_compose import _in_parts

    assert list(_in_parts([b"ab", b"cd"], 4)) == [b"abcd"]
    assert list(_in_parts([b"ab", b"cd", b"e", b""], 4)) == [b"abcd", b"e"]
    assert list(_in_parts([b"abcdef", b""], 4)) == [b"abcdef"]
    assert list(_in_parts([], 4)) == [b""]
    assert list(_in_parts([b""], 4)) == [b""]


SOURCE = "logs/.pad/pad-1.bin"


def test_compose_copies_the_kept_bytes_from_another_source(store: Store) -> None:
    """compose(source=...) makes source[:keep] + pieces under the key, leaves the source as it was,
    and holds the conditions against the key, not the source."""
    padding = bytes(range(256)) * (MIN_PART_SIZE // 256) + b"PAD-TAIL"
    store.put(SOURCE, padding, {})
    first = store.compose(KEY, MIN_PART_SIZE, [b"NEW"], {"v": "1"}, if_none_match=True, source=SOURCE)
    data, info = store.get(KEY)
    assert data == padding[:MIN_PART_SIZE] + b"NEW" and info.metadata == {"v": "1"}
    assert first is None or first == info.etag
    assert store.get(SOURCE)[0] == padding
    with pytest.raises(PreconditionFailed):
        store.compose(KEY, MIN_PART_SIZE, [b"AGAIN"], {}, if_none_match=True, source=SOURCE)
    with pytest.raises(PreconditionFailed):  # the source's ETag is no condition on the key
        store.compose(KEY, MIN_PART_SIZE, [b"X"], {}, if_match=store.head(SOURCE).etag,  # type: ignore[union-attr]
                      source=SOURCE)
    store.compose(KEY, MIN_PART_SIZE, [b"SECOND"], {"v": "2"}, if_match=info.etag, source=SOURCE)
    assert store.get(KEY)[0] == padding[:MIN_PART_SIZE] + b"SECOND"


def test_compose_keeps_a_range_from_an_offset_of_the_object_itself(store: Store) -> None:
    """compose(start=...) makes the object its own bytes [start, start + keep) (pieces or none
    after them), conditional on its ETag: a stale one changes nothing."""
    body = bytes(range(256)) * (MIN_PART_SIZE // 256 + 64)
    etag = store.put(KEY, body, {"v": "1"})
    start = 300
    with pytest.raises(PreconditionFailed):
        store.compose(KEY, MIN_PART_SIZE, [], {}, if_match=normalize_etag("0" * 32), start=start)
    new = store.compose(KEY, MIN_PART_SIZE, [], {"v": "2"}, if_match=etag, start=start)
    data, info = store.get(KEY)
    assert data == body[start:start + MIN_PART_SIZE] and info.metadata == {"v": "2"}
    assert new is None or new == info.etag
    etag = store.put(KEY, body, {})
    store.compose(KEY, MIN_PART_SIZE, [b"END"], {}, if_match=etag, start=7)
    assert store.get(KEY)[0] == body[7:7 + MIN_PART_SIZE] + b"END"


def test_compose_from_a_missing_source_is_not_found(store: Store) -> None:
    """A source that does not exist raises ObjectNotFound and writes nothing."""
    with pytest.raises(ObjectNotFound):
        store.compose(KEY, MIN_PART_SIZE, [b"NEW"], {}, if_none_match=True, source=SOURCE)
    assert store.head(KEY) is None and store.list("logs/") == []
