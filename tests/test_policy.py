"""Least privilege, on Ceph RGW: the bucket policy in docs/least-privilege.md runs everything, and
each of its actions is needed.

A second RGW user, with obviously fake keys, reaches buckets the suite's user owns only through
that policy, parsed from the page's one json block with its placeholders filled in. With the whole
policy it runs `uploader run` (a real process) until every fetch is stored once, then `check`,
`check --fix`, `verify`, `verify --all`, `export`, `repair`, `status`, `close-day` and `replay`.
Then, on a fresh bucket per action, the policy without that one action: each command that needs
it fails (or, where it can go on, reports) in one line naming the action, and nothing is lost:
what `run` could not upload waits in the spool and lands exactly once when the action is granted
again.

Ceph RGW only: it holds requests to a bucket policy as AWS does. moto stores a bucket policy but
lets every signed request through whatever it says, so it could prove nothing here.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config as BotoConfig
from helpers import NY, read_day, spooled_ids, terminate, wait_for, write_config
from rig.s3servers import S3Server, client_env

from uploader import daily
from uploader.config import load_config
from uploader.fetchlog import FetchWriter
from uploader.publish.status import StatusFile
from uploader.store.s3_errors import permission_for

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "least-privilege.md"
PREFIX = "logs"  # write_config's storage.prefix
# Obviously fake keys for the policy's user, made on the suite's throwaway cluster.
KEY = ("LEASTPRIVILEGEFAKE01", "least-privilege-fake-secret-not-a-real-key")
RETENTION_DAYS = 30
# A log line of `--log-format json` (the commands' own output is never a JSON object).
_LOG_LINE = re.compile(r"^\{.*\"level\": ")


def documented_policy() -> str:
    """The text of the one ```json block of docs/least-privilege.md, placeholders and all."""
    blocks = re.findall(r"^```json\n(.*?)^```$", DOC.read_text(), re.S | re.M)
    assert len(blocks) == 1, f"{DOC} must hold exactly one json block, the policy"
    return str(blocks[0])


def policy(bucket: str, principal: str, without: str | None = None) -> str:
    """The documented policy for ``bucket`` and ``principal``, verbatim but for ``without``."""
    text = documented_policy()
    for placeholder, value in (("PRINCIPAL", principal), ("BUCKET", bucket), ("PREFIX", PREFIX)):
        text = text.replace(placeholder, value)
    doc = json.loads(text)
    if without is not None:
        for statement in doc["Statement"]:
            statement["Action"] = [a for a in statement["Action"] if a != without]
        doc["Statement"] = [s for s in doc["Statement"] if s["Action"]]
    return json.dumps(doc)


ACTIONS = sorted(a for s in json.loads(documented_policy())["Statement"] for a in s["Action"])
YESTERDAY = "<yesterday>"  # stands for the day before today in a command's arguments
NO_DOCUMENT = "2001-01-01"  # a day no bucket here has a document for


@dataclass(frozen=True)
class Command:
    """One command run without an action, and what it must do: ``fails`` (exit 1) or ``reports``
    (exit 0); either way exactly one line of its own output names the action (of those starting
    with ``line``: `status` also repeats the errors its spool remembers). ``damaged``: the day's
    document is given garbage first, so that `repair` has something to write."""

    args: tuple[str, ...]
    outcome: str
    damaged: bool = False
    line: str = ""


@dataclass(frozen=True)
class Needs:
    """What taking one action out does: to `run` (``fails``: an ERROR, the batches kept in the
    spool; ``reports``: uploads go on, a WARNING says what is missing; None: `run` does not use
    it), and to the one-shot commands that need it. docs/least-privilege.md's table says the same.

    ``foreign_today``: today's document is another user's when `run` starts. Ceph RGW lets an
    object's writer read it whatever the bucket policy (its ACL makes it the owner), so only a
    document someone else wrote shows that reading needs s3:GetObject. ``remembered``: before the
    one-shot commands the spool learns the server's capabilities (a `check` with the whole
    policy), so their writes are conditional PUTs, not the probe's plain one: a 403 to one must
    not pass for a refused feature. ``leaves``: what `run` could not remove and left in the
    bucket ("objects" under the probe prefix, or unfinished multipart "uploads").
    """

    run: str | None
    commands: tuple[Command, ...] = field(default_factory=tuple)
    foreign_today: bool = False
    remembered: bool = False
    leaves: str | None = None


FAILS, REPORTS = "fails", "reports"
NEEDS = {
    "s3:GetObject": Needs(FAILS, (
        Command(("verify", YESTERDAY), FAILS), Command(("verify", "--all"), FAILS),
        Command(("export", YESTERDAY), FAILS), Command(("repair", YESTERDAY), FAILS),
        Command(("status",), FAILS, line="today")), foreign_today=True),
    "s3:PutObject": Needs(FAILS, (Command(("check",), FAILS), Command(("repair", YESTERDAY), FAILS, damaged=True)),
                          remembered=True),
    "s3:DeleteObject": Needs(REPORTS, (Command(("check",), FAILS),), leaves="objects"),
    "s3:AbortMultipartUpload": Needs(REPORTS, (Command(("check",), FAILS),), leaves="uploads"),
    "s3:ListBucket": Needs(FAILS, (
        Command(("check",), FAILS), Command(("verify", "--all"), FAILS), Command(("verify", NO_DOCUMENT), FAILS))),
    "s3:ListBucketMultipartUploads": Needs(REPORTS, (Command(("check",), FAILS),)),
    "s3:GetBucketVersioning": Needs(None, (Command(("check",), REPORTS),)),
    "s3:GetLifecycleConfiguration": Needs(None, (Command(("check",), REPORTS), Command(("check", "--fix"), FAILS))),
    "s3:PutLifecycleConfiguration": Needs(None, (Command(("check", "--fix"), FAILS),)),
}


def names(action: str, line: str) -> bool:
    """Whether ``line`` names ``action`` (s3:ListBucket is not named by s3:ListBucketMultipartUploads)."""
    return re.search(re.escape(action) + r"(?![A-Za-z])", line) is not None


@dataclass(frozen=True)
class PolicyUser:
    """The RGW user the policy names, and the environment that gives a process its keys."""

    uid: str

    @property
    def principal(self) -> str:
        return f"arn:aws:iam:::user/{self.uid}"  # RGW's form: no account, the user id

    def env(self) -> dict[str, str]:
        env = client_env()
        env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = KEY
        return env

    def client(self, server: S3Server) -> Any:
        """A plain boto3 client with this user's keys, to read back what its uploader wrote: the
        objects are its own, which the bucket's owner may list and delete but not read."""
        return boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1",
                            aws_access_key_id=KEY[0], aws_secret_access_key=KEY[1],
                            config=BotoConfig(s3={"addressing_style": "path"}))


@dataclass
class Case:
    """A bucket the suite's user owns, a config and spool for it, and the policy user's commands."""

    server: S3Server
    user: PolicyUser
    bucket: str
    config: Path
    reader: Any  # the user's own client

    @classmethod
    def create(cls, server: S3Server, user: PolicyUser, folder: Path, without: str | None = None) -> Case:
        bucket = server.new_bucket("policy")
        config = write_config(folder, s3=(server.endpoint, bucket), watch={"batch_size": 2},
                              storage={"retention_days": RETENTION_DAYS})
        case = cls(server, user, bucket, config, user.client(server))
        case.grant(without)
        return case

    @property
    def spool(self) -> Path:
        return load_config(self.config).spool.dir

    def grant(self, without: str | None = None) -> None:
        """The documented policy on the bucket (set by its owner), less ``without``."""
        document = policy(self.bucket, self.user.principal, without)
        self.server.admin.put_bucket_policy(Bucket=self.bucket, Policy=document)

    def cli(self, *args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
        """One command as the policy's user runs it; logs as JSON lines, so its own lines stand apart."""
        days = {YESTERDAY: (today() - timedelta(days=1)).isoformat()}
        return subprocess.run(
            [sys.executable, "-m", "uploader.cli", *(days.get(a, a) for a in args), "--log-format", "json",
             "--config", str(config or self.config)],
            capture_output=True, text=True, timeout=120, cwd=REPO, env=self.user.env(), check=False)

    def write(self, count: int, day: date) -> list[str]:
        """``count`` fetches of ``day`` appended as the pipeline does; their ids."""
        writer = FetchWriter(load_config(self.config).watch.file, "America/New_York")
        writer.path.parent.mkdir(parents=True, exist_ok=True)  # `run` makes it too, but may not have yet
        when = NY.localize(datetime.combine(day, time(12))) if day != today() else None
        return [writer.append({"games": [n]}, total_matches=n % 3, now=when) for n in range(count)]

    def run(self, log: Path) -> subprocess.Popen[bytes]:
        """`uploader run`, its log lines (JSON) going to ``log``."""
        with log.open("w") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "uploader.cli", "run", "--log-format", "json", "--config", str(self.config)],
                stdout=subprocess.DEVNULL, stderr=out, cwd=REPO, env=self.user.env())

    def stored(self, day: date) -> dict[str, str]:
        """The day document's user metadata, as the user reads it ({}: no document yet)."""
        try:
            return dict(self.reader.head_object(Bucket=self.bucket, Key=daily.day_key(PREFIX, day))["Metadata"])
        except self.reader.exceptions.ClientError:
            return {}

    def documents(self) -> list[str]:
        """The keys of the day documents in the bucket (its owner may list them)."""
        return self.server.keys(self.bucket, f"{PREFIX}/all_api_json_log_")

    def leftovers(self) -> dict[str, int]:
        """What probes and appends left in the bucket, as its owner sees it."""
        probe = f"{PREFIX}/.uploader-check/"
        uploads = self.server.admin.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])
        return {"objects": len(self.server.keys(self.bucket, probe)), "uploads": len(uploads)}

    def clear_leftovers(self) -> None:
        """Remove them as the bucket's owner (who may delete and abort, though not read, the user's)."""
        for key in self.server.keys(self.bucket, f"{PREFIX}/.uploader-check/"):
            self.server.admin.delete_object(Bucket=self.bucket, Key=key)
        for u in self.server.admin.list_multipart_uploads(Bucket=self.bucket).get("Uploads", []):
            self.server.admin.abort_multipart_upload(Bucket=self.bucket, Key=u["Key"], UploadId=u["UploadId"])

    def fetch_ids(self, day: date) -> dict[str, int]:
        """How many times each fetch id is stored in the day's document, which must be sound."""
        stored = read_day(self.reader, self.bucket, daily.day_key(PREFIX, day))
        assert stored.problems == [], stored.problems
        return dict(stored.fetch_ids)


def today() -> date:
    """Today in the config's zone (write_config keeps the default, America/New_York)."""
    return datetime.now(NY).date()


def log_lines(log: Path) -> list[dict[str, Any]]:
    """The JSON log lines a process wrote so far."""
    return [json.loads(line) for line in log.read_text().splitlines() if _LOG_LINE.match(line)]


def own_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    """What a command printed itself (its report and its error line), without its log lines."""
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip() and not _LOG_LINE.match(line)]


def ok(proc: subprocess.CompletedProcess[str]) -> list[str]:
    """The lines a command that must succeed printed (exit 0, no traceback)."""
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    return own_lines(proc)


@pytest.fixture(scope="module")
def policy_user(ceph_server: S3Server) -> PolicyUser:
    """A second user on the cluster, with no bucket of its own and no access but a bucket policy's."""
    assert ceph_server.radosgw_admin is not None
    user = PolicyUser(f"least-privilege-{uuid.uuid4().hex[:8]}")
    ceph_server.radosgw_admin("user", "create", "--uid", user.uid, "--display-name", "least privilege test",
                              "--access-key", KEY[0], "--secret-key", KEY[1])
    return user


@dataclass
class Reference:
    """A bucket the whole policy let `run` fill: yesterday's document (closed) and today's."""

    case: Case
    yesterday: list[str]
    today: list[str]
    run_log: list[dict[str, Any]]
    run_exit: int | None
    yesterday_document: bytes
    today_document: bytes


@pytest.fixture(scope="module")
def reference(ceph_server: S3Server, policy_user: PolicyUser, tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """`uploader run` as the policy user, with the whole documented policy, until yesterday's
    fetches are stored and the day closed (the service cuts and closes past days at start) and
    today's are stored."""
    folder = tmp_path_factory.mktemp("policy-reference")
    case = Case.create(ceph_server, policy_user, folder)
    yesterday = today() - timedelta(days=1)
    written_yesterday, written_today = case.write(4, yesterday), case.write(6, today())
    proc = case.run(folder / "run.log")
    try:
        wait_for(lambda: case.stored(yesterday).get("closed") == "true"
                 and case.stored(today()).get("total-fetches") == "6", timeout=60,
                 what="yesterday's fetches stored and the day closed, and today's stored")
    finally:
        code = terminate(proc)
    bodies = [case.reader.get_object(Bucket=case.bucket, Key=daily.day_key(PREFIX, day))["Body"].read()
              for day in (yesterday, today())]
    return Reference(case, written_yesterday, written_today, log_lines(folder / "run.log"), code, *bodies)


def test_the_documented_policy_is_one_json_block_of_exactly_the_actions_the_tests_expect() -> None:
    """The page's policy parses, scopes object actions to the prefix and bucket actions to the
    bucket, and every action in it has its expectations below (and none is expected that it lacks)."""
    doc = json.loads(policy("b", "arn:aws:iam:::user/u"))
    resources = {a: s["Resource"] for s in doc["Statement"] for a in s["Action"]}
    assert sorted(resources) == sorted(NEEDS) == ACTIONS
    for action, resource in resources.items():
        on_objects = action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload")
        assert resource == (["arn:aws:s3:::b/logs/*"] if on_objects else ["arn:aws:s3:::b"]), action
    assert all(s["Effect"] == "Allow" and s["Principal"] == {"AWS": ["arn:aws:iam:::user/u"]} for s in doc["Statement"])


def test_every_request_the_store_makes_is_granted_by_the_documented_policy() -> None:
    """Each request name the S3 store and its probe translate errors for maps to actions, and
    each of those is in the policy: a new kind of request cannot go unnoticed by the page."""
    ops: set[str] = set()
    for module in ("s3.py", "s3_probe.py"):
        tree = ast.parse((REPO / "uploader" / "store" / module).read_text())
        ops |= {node.args[0].value for node in ast.walk(tree)
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("_translate", "translate") and node.args
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)}
    assert {"HEAD", "GET", "PUT", "probe PUT", "LIST", "DELETE"} <= ops, ops
    for op in sorted(ops):
        granted = permission_for(op)
        assert granted is not None, f"no permission known for {op!r}"
        assert set(re.findall(r"s3:[A-Za-z]+", granted)) <= set(ACTIONS), (op, granted)


def test_the_documented_policy_runs_the_service_and_every_command(reference: Reference, tmp_path: Path) -> None:
    """Held to the policy alone, the user's `run` stores every fetch exactly once and closes
    yesterday without a warning, and check, check --fix, verify, verify --all, export, status,
    repair, close-day and replay all succeed; outside the prefix it may do nothing."""
    case, yesterday = reference.case, today() - timedelta(days=1)
    assert reference.run_exit == 0
    complaints = [line["message"] for line in reference.run_log if line["level"] in ("warning", "error")]
    assert complaints == []
    assert case.fetch_ids(yesterday) == dict.fromkeys(reference.yesterday, 1)
    assert case.fetch_ids(today()) == dict.fromkeys(reference.today, 1)
    # As the page says: what the uploader writes is its user's, which the bucket's owner cannot read.
    with pytest.raises(case.server.admin.exceptions.ClientError, match="403"):
        case.server.admin.head_object(Bucket=case.bucket, Key=daily.day_key(PREFIX, today()))

    checked = ok(case.cli("check"))
    assert checked[-1] == "OK: the store is usable" and "multipart upload" in "\n".join(checked)
    fixed = "\n".join(ok(case.cli("check", "--fix")))
    assert "bucket lifecycle: our rules installed" in fixed
    rules = case.server.admin.get_bucket_lifecycle_configuration(Bucket=case.bucket)["Rules"]
    assert {r["ID"] for r in rules} == {f"all-api-uploader-{what}:{PREFIX}" for what in (
        "abort-incomplete-multipart", "expire-day-documents", "expire-quarantine")}
    assert ok(case.cli("verify", YESTERDAY))[-1] == "verify: OK"
    assert ok(case.cli("verify", "--all"))[-1].startswith("verify: 2 day(s), 0 with problems")
    exported = case.cli("export", YESTERDAY)
    assert exported.returncode == 0, exported.stderr
    exported_ids = [json.loads(line)["FETCH_HEADER"]["fetch_id"] for line in exported.stdout.splitlines()]
    assert exported_ids == reference.yesterday
    assert any(line.startswith("today") and "total_fetches_today=6" in line for line in ok(case.cli("status")))

    key = daily.day_key(PREFIX, yesterday)
    case.server.admin.put_object(Bucket=case.bucket, Key=key, Body=reference.yesterday_document + b"\x00garbage{]")
    assert case.cli("verify", YESTERDAY).returncode == 1
    repaired = ok(case.cli("repair", YESTERDAY))
    assert any(line.startswith("repair: wrote") and line.endswith("verify: OK") for line in repaired)
    assert case.fetch_ids(yesterday) == dict.fromkeys(reference.yesterday, 1)
    assert case.stored(yesterday)["closed"] == "true"
    assert ok(case.cli("close-day", YESTERDAY)) == [f"close-day: {yesterday} is closed"]
    assert ok(case.cli("replay"))[0].startswith("replay: uploaded 0 batch(es)")

    # The object actions reach only the prefix: under another one, the first write is refused.
    other = write_config(tmp_path, s3=(case.server.endpoint, case.bucket), storage={"prefix": "elsewhere"})
    denied = case.cli("check", config=other)
    assert denied.returncode == 1
    failed = [line for line in own_lines(denied) if line.startswith("FAILED: ")]
    assert len(failed) == 1 and names("s3:PutObject", failed[0]), denied.stdout


@pytest.mark.parametrize("action", ACTIONS)
def test_without_one_action_what_needs_it_says_so_in_one_line_and_nothing_is_lost(
    action: str, ceph_server: S3Server, policy_user: PolicyUser, reference: Reference, tmp_path: Path,
) -> None:
    """With the policy less one action: `run` either keeps its batches in the spool with one ERROR
    line naming the action, or uploads them and says in one WARNING line what it could not do;
    each one-shot command that needs the action fails (or reports) in exactly one line naming it;
    granted again, everything `run` kept lands exactly once."""
    needs = NEEDS[action]
    case = Case.create(ceph_server, policy_user, tmp_path, without=action)
    written: list[str] = []
    already = reference.today if needs.foreign_today else []
    if already:  # written by the bucket's owner: another user's document
        ceph_server.admin.put_object(Bucket=case.bucket, Key=daily.day_key(PREFIX, today()),
                                     Body=reference.today_document)
    if needs.run is not None:
        written = case.write(4, today())
        _run_without(case, action, needs.run, written, tmp_path / "run.log", already)
        left = case.leftovers()
        assert {kind for kind, n in left.items() if n} == ({needs.leaves} if needs.leaves else set()), left
        # Each command then shows what its own requests need, not what run left behind.
        case.clear_leftovers()

    if needs.remembered:
        case.grant()
        ok(case.cli("check"))
        case.grant(without=action)
    yesterday = daily.day_key(PREFIX, today() - timedelta(days=1))
    for command in needs.commands:
        body = reference.yesterday_document + (b"\x00garbage{]" if command.damaged else b"")
        ceph_server.admin.put_object(Bucket=case.bucket, Key=yesterday, Body=body)
        proc = case.cli(*command.args)
        assert proc.returncode == (1 if command.outcome == FAILS else 0), proc.stdout + proc.stderr
        assert "Traceback" not in proc.stdout + proc.stderr
        named = [line for line in own_lines(proc) if names(action, line) and line.startswith(command.line)]
        assert len(named) == 1, (command.args, proc.stdout + proc.stderr)
        if command.outcome == FAILS and command.args[0] == "check":
            assert named[0].startswith("FAILED: "), named
        if "--fix" in command.args:  # refused: the bucket's lifecycle stays as it was (none)
            with pytest.raises(ceph_server.admin.exceptions.ClientError, match="NoSuchLifecycleConfiguration"):
                ceph_server.admin.get_bucket_lifecycle_configuration(Bucket=case.bucket)
        # Nothing a refused command touched was changed.
        assert ceph_server.admin.get_object(Bucket=case.bucket, Key=yesterday)["Body"].read() == body

    case.grant()
    if needs.run == FAILS:
        replayed = case.cli("replay")
        assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    if written:
        assert case.fetch_ids(today()) == dict.fromkeys(already + written, 1)
        assert spooled_ids(case.spool) == []
    if needs.remembered:  # refused for want of a permission, the feature was not dropped
        remembered = json.loads((case.spool / "capabilities.json").read_text())
        assert [entry["conditional_put"] for entry in remembered.values()] == [True]


def _run_without(case: Case, action: str, outcome: str, written: list[str], log: Path, already: list[str]) -> None:
    """`uploader run` on a policy without ``action``: what it must log, store and keep
    (``already``: the fetches today's document held before)."""
    proc = case.run(log)

    def complaints() -> list[dict[str, Any]]:
        return [line for line in log_lines(log) if line["level"] in ("warning", "error")]

    def attempts() -> int:
        """The most attempts any batch had (status.json, read afresh)."""
        retries = StatusFile(case.spool / "status.json").snapshot()["retries"]
        return max((r["attempts"] for r in retries.values()), default=0)

    try:
        if outcome == FAILS:
            # Failed twice: the retry must not say it again.
            wait_for(lambda: attempts() >= 2, timeout=60, what=f"run to try twice without {action}")
        else:
            wait_for(lambda: case.stored(today()).get("total-fetches") == str(len(already + written))
                     and any(names(action, line["message"]) for line in complaints()), timeout=60,
                     what=f"run to upload without {action} and say what it could not do")
    finally:
        code = terminate(proc)
    assert code == 0
    lines = complaints()
    assert lines and all(names(action, line["message"]) for line in lines), [line["message"] for line in lines]
    events = [line["event"] for line in lines]
    assert len(events) == len(set(events)), f"a failure was said more than once: {events}"
    if outcome == FAILS:
        assert [line["level"] for line in lines if line["event"] == "upload_failed"] == ["error"]
        assert sorted(spooled_ids(case.spool)) == sorted(written), "a batch left the spool unacknowledged"
        assert case.documents() == ([daily.day_key(PREFIX, today())] if already else [])
    else:
        assert {line["level"] for line in lines} == {"warning"}
        assert case.fetch_ids(today()) == dict.fromkeys(already + written, 1)
