"""Security checks: no credential in any output, private spool files, no credentials in the repo.

Config refusals that are already covered elsewhere (and not repeated here): a secret or key id in
config.toml and plain http to a non-loopback endpoint (tests/test_config.py,
``test_bad_config_is_refused_in_one_line`` and ``test_insecure_http_allowed_when_asked_or_loopback``).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import pytz
from helpers import make_s3_store, record, wait_for, write_config

from uploader import daily

REPO = Path(__file__).resolve().parent.parent
# Built at run time so that this file itself holds nothing key-shaped.
KEY_ID = "AKIA" + "SECURITYTEST" + "0001"
SECRET = "FAKEsecret" + "9" * 20 + "/EndOfSecret"
KEY_SHAPES = [
    re.compile(rb"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"),
    re.compile(rb"(?i)aws_secret_access_key[\"']?\s*[=:]\s*[\"']?[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])"),
]


UMASK_000_RUN = """
import os, runpy, sys
os.umask(0)
sys.argv = ["uploader", *sys.argv[1:]]
runpy.run_module("uploader.cli", run_name="__main__")
"""


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, AWS_ACCESS_KEY_ID=KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET, AWS_SESSION_TOKEN=SECRET + "tok")
    env.update(extra)
    return env


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "uploader.cli", *args], capture_output=True, text=True,
                          timeout=120, env=_env(), cwd=cwd, check=False)


def _records(n: int, prefix: str = "sec") -> bytes:
    now = datetime.now(pytz.utc)
    return b"".join(record(f"{prefix}{i:03d}", now - timedelta(seconds=n - i)) for i in range(n))


def test_credentials_never_appear_in_logs_or_status_even_at_debug(tmp_path, moto_server, unused_port):
    """With credentials in the environment, run/status/check/replay/verify at DEBUG never print them."""
    # moto takes any key pair, so the secret under test can be one that looks real.
    bucket = moto_server.new_bucket()
    config = write_config(tmp_path, s3=(moto_server.endpoint, bucket))
    (tmp_path / "data").mkdir()
    log = tmp_path / "run.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "uploader.cli", "run", "--config", str(config),
                                 "--log-level", "DEBUG"], stdout=out, stderr=out, env=_env(), cwd=tmp_path)
    try:
        (tmp_path / "data" / "all_api.json").write_bytes(_records(10) + b"garbage line\n" + _records(3, "rest"))
        store = make_s3_store(moto_server, bucket)
        key = daily.day_key("logs", datetime.now(pytz.timezone("America/New_York")).date())
        wait_for(lambda: store.head(key), timeout=30, what="the first upload")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    outputs = {"run": log.read_text()}
    for name, args in {
        "status": ("status", "--config", str(config), "--log-level", "DEBUG"),
        "status --json": ("status", "--config", str(config), "--json", "--log-level", "DEBUG"),
        "check": ("check", "--config", str(config), "--log-level", "DEBUG", "--log-format", "json"),
        "replay": ("replay", "--config", str(config), "--log-level", "DEBUG"),
        "verify": ("verify", "--config", str(config), "--log-level", "DEBUG", key[-15:-5]),
    }.items():
        done = _cli(*args, cwd=tmp_path)
        outputs[name] = done.stdout + done.stderr
    (tmp_path / "closed").mkdir()
    closed = write_config(tmp_path / "closed", s3=(f"http://127.0.0.1:{unused_port}", bucket))
    done = _cli("check", "--config", str(closed), "--log-level", "DEBUG", cwd=tmp_path)
    outputs["check (endpoint down)"] = done.stdout + done.stderr
    assert "service_started" in outputs["run"] and "verify: OK" in outputs["verify"]
    assert done.returncode == 1
    for name, text in outputs.items():
        for secret in (KEY_ID, SECRET, SECRET[10:30]):
            assert secret not in text, f"{name} printed a credential"


@pytest.mark.parametrize(
    "toml",
    [
        '[storage.s3]\nendpoint_url = "https://{key}:{secret}@objects.example.com"\n',
        '[watch]\npassword = "{secret}"\n',
        '[storage.s3]\naws_session_token = "{secret}"\n',
    ],
    ids=["userinfo-in-endpoint", "password-anywhere", "session-token"],
)
def test_config_carrying_credentials_is_refused_without_echoing_them(tmp_path, toml):
    """Credentials in the endpoint URL or under any credential-like key are refused, never echoed."""
    path = tmp_path / "config.toml"
    path.write_text(toml.format(key=KEY_ID, secret=SECRET.replace("/", "_")))
    done = _cli("check", "--config", str(path), cwd=tmp_path)
    assert done.returncode == 2
    assert "AWS_ACCESS_KEY_ID" in done.stderr  # says where credentials belong
    assert KEY_ID not in done.stderr + done.stdout
    assert SECRET.replace("/", "_") not in done.stderr + done.stdout


@pytest.mark.parametrize("backend", ["s3-down", "directory"])
def test_spool_and_quarantine_files_are_private_whatever_the_umask(tmp_path, backend, unused_port):
    """After a real run with quarantined input and umask 000, spool folders are 0700 and files 0600."""
    s3 = (f"http://127.0.0.1:{unused_port}", "nowhere") if backend == "s3-down" else None
    config = write_config(tmp_path, s3=s3)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "all_api.json").write_bytes(_records(10) + b"not a record\n" + _records(10, "two"))
    spool = tmp_path / "data" / "spool"
    log = tmp_path / "run.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", UMASK_000_RUN, "run", "--config", str(config)],
                                stdout=out, stderr=out, env=_env(), cwd=tmp_path)
    try:
        quarantined = (spool / "quarantine").glob if backend == "s3-down" else (spool / "quarantine" / "sent").glob
        wait_for(lambda: any(quarantined("*.bin")), timeout=30, what="quarantined bytes")
        if backend == "s3-down":
            wait_for(lambda: len(list((spool / "batches").glob("*.json"))) == 2, timeout=30, what="two spooled batches")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    files = dirs = 0
    for path in [spool, *spool.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        if path.is_dir():
            dirs += 1
            assert mode == 0o700, f"{path} is {oct(mode)}"
        else:
            files += 1
            assert mode == 0o600, f"{path} is {oct(mode)}"
    assert dirs >= 4 and files >= 4


def test_repository_contains_no_credentials():
    """No tracked file holds an AWS-style access key id or a 40-character secret assignment."""
    git = shutil.which("git")
    if git is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run([git, "ls-files", "-z"], cwd=REPO, capture_output=True, check=True, timeout=60)
    names = [n for n in listed.stdout.decode().split("\0") if n]
    assert names, "git ls-files listed nothing"
    # The patterns themselves must catch the shapes they are meant for.
    sample = b"id = " + KEY_ID.encode() + b'\naws_secret_access_key = "' + b"A" * 40 + b'"\n'
    assert all(p.search(sample) for p in KEY_SHAPES)
    hits = []
    for name in names:
        path = REPO / name
        if not path.is_file():
            continue
        data = path.read_bytes()
        for pattern in KEY_SHAPES:
            for m in pattern.finditer(data):
                line = data.count(b"\n", 0, m.start()) + 1
                hits.append(f"{name}:{line}")
    assert hits == [], f"key-shaped strings in tracked files: {hits}"
