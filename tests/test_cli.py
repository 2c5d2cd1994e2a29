"""The command line as a new user meets it: a closed pipe, a folder where a file belongs, a spool
this user may not write, a spool in use, global options on either side of the command, --help,
and `status` of an empty spool and of quarantine. Every user-caused error is one line on
stderr, `uploader: <what>. Try: <what to do>`, without a traceback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path

import pytest
from helpers import NY, read_only, uploader, wait_for, write_config

from uploader import daily
from uploader.cli import COMMANDS, build_parser, main
from uploader.config import Config, load_config
from uploader.fetchlog import FetchWriter, append_bytes
from uploader.local.cut import Cutter
from uploader.local.spool import Spool
from uploader.store.directory import DirectoryStore

REPO = Path(__file__).resolve().parent.parent
DAY = date(2025, 7, 10)
FETCHES = 100  # of about 3 KiB each: far more than a pipe's 64 KiB buffer
NOBODY = 65534



def one_line_error(proc: subprocess.CompletedProcess[str], code: int) -> str:
    """The single stderr line of a user-caused error (exit ``code``, no traceback)."""
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("uploader: ") and lines[0].count("uploader: ") == 1, lines[0]
    assert ". Try: " in lines[0], lines[0]
    return lines[0]


def write_fetches(config: Config, n: int, pad: int = 3000) -> list[str]:
    """``n`` fetches of DAY through the pipeline's own writer; returns their ids."""
    config.watch.file.parent.mkdir(parents=True, exist_ok=True)
    writer = FetchWriter(config.watch.file, config.day.timezone)
    when = NY.localize(datetime(2025, 7, 10, 16, 15))
    return [writer.append({"games": ["x" * pad]}, total_matches=i, now=when) for i in range(n)]


def cut_all(config: Config) -> None:
    """Cut every complete record of DAY (and before) into the spool, as the service does at close-out."""
    spool = Spool(config.spool.dir)
    cutter = Cutter(config.watch.file, spool, config.day.tz, config.watch.batch_size)
    while (outcome := cutter.cut(close_through=DAY)).more or outcome.batches or outcome.quarantined:
        pass


def stored_ids(config: Config) -> list[str]:
    store = DirectoryStore(config.storage.directory.path)
    doc = json.loads(store.get(daily.day_key(config.storage.prefix, DAY))[0])
    return [f["FETCH_HEADER"]["fetch_id"] for u in doc["uploads"] for f in u["fetch_data"]]


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return write_config(tmp_path)


@pytest.fixture
def day_document(config_path: Path) -> Path:
    """A config whose DAY document was made by the real path: writer, cut, `uploader replay`."""
    config = load_config(config_path)
    ids = write_fetches(config, FETCHES)
    cut_all(config)
    done = uploader("replay", "--config", str(config_path))
    assert done.returncode == 0, done.stderr
    assert stored_ids(config) == ids
    return config_path


# -- 1. a closed pipe ------------------------------------------------------------------------


def test_export_into_head_1_ends_quietly(day_document: Path) -> None:
    """`uploader export DAY | head -1`: one line read, the reader gone; exit 0, nothing on stderr."""
    proc = subprocess.Popen([sys.executable, "-m", "uploader.cli", "export", DAY.isoformat(),
                             "--config", str(day_document)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=REPO)
    assert proc.stdout is not None
    first = json.loads(proc.stdout.readline())
    proc.stdout.close()  # what head does after its line; the rest (> 64 KiB) cannot be written
    _, err = proc.communicate(timeout=120)
    assert first["upload_sequence"] == 1 and first["FETCH_FOOTER"] == {"total_matches": 0}
    assert proc.returncode == 0 and err == b""


@pytest.mark.parametrize("args", [["export", DAY.isoformat()], ["verify", "--all"], ["status", "--json"],
                                  ["--help"]], ids=["export", "verify-all", "status", "help"])
def test_a_reader_gone_before_the_first_line_ends_quietly(day_document: Path, args: list[str]) -> None:
    """`uploader ... | head -0`: the pipe's reader is closed before the command starts."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = uploader(*args, "--config", str(day_document), stdout=write_end)
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (0, "")


def test_replay_into_a_closed_pipe_loses_nothing(config_path: Path) -> None:
    """The pipe closes while `replay` reports: exit 0, and every fetch is stored and out of the spool."""
    config = load_config(config_path)
    ids = write_fetches(config, 25, pad=10)
    cut_all(config)
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = uploader("replay", "--config", str(config_path), stdout=write_end)
    finally:
        os.close(write_end)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert stored_ids(config) == ids and Spool(config.spool.dir).pending_batches() == []


# -- 2. watch.file is a folder ---------------------------------------------------------------


@pytest.mark.parametrize("command", ["run", "status"])
def test_watch_file_that_is_a_folder_is_a_config_error(config_path: Path, command: str) -> None:
    """A folder at watch.file: exit 2, one line naming the key (before anything starts)."""
    load_config(config_path).watch.file.mkdir(parents=True)
    line = one_line_error(uploader(command, "--config", str(config_path)), 2)
    assert line.startswith("uploader: config watch.file: ") and "is a folder" in line


def test_watch_file_under_a_file_is_a_config_error(tmp_path: Path) -> None:
    config_path = write_config(tmp_path, watch={"file": "data/all_api.json/inner.json"})
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "all_api.json").write_text("")
    line = one_line_error(uploader("run", "--config", str(config_path)), 2)
    assert "config watch.file: " in line and "is a file" in line


# -- 3. a spool lock this user may not open ----------------------------------------------------


def test_a_lock_that_is_a_folder_is_one_line(config_path: Path) -> None:
    """`<spool>/lock` is a folder (which root hits too): exit 1, naming the path and the fix."""
    lock = load_config(config_path).spool.dir / "lock"
    lock.mkdir(parents=True)
    line = one_line_error(uploader("run", "--config", str(config_path)), 1)
    assert str(lock) in line and f"rmdir {lock}" in line


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A folder another user can reach (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="uploader-cli-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def as_plain_user() -> list[str]:
    """A command prefix that runs the child as nobody when we are root, so that file modes bind
    (setpriv, as an operator would; subprocess's own ``user=`` cannot exec a Python under /root)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root and setpriv (util-linux) is missing: cannot drop to a plain user")
    prefix = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    probe = subprocess.run([*prefix, sys.executable, "-c", "import uploader.cli"], cwd=REPO, capture_output=True,
                           check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot run the uploader as uid {NOBODY} here: {probe.stderr.decode()[-200:]}")
    return prefix


def test_a_read_only_lock_file_is_one_line(shared_tmp: Path) -> None:
    """`<spool>/lock` mode 0400, its owner runs `replay`: exit 1, naming the lock and the chmod."""
    config_path = write_config(shared_tmp)
    spool_dir = load_config(config_path).spool.dir
    Spool(spool_dir)
    lock = spool_dir / "lock"
    lock.write_text("")
    lock.chmod(0o400)
    prefix = as_plain_user()
    if prefix:  # the spool is nobody's, as the service user's spool is the service user's
        for path in (shared_tmp / "data", spool_dir, *spool_dir.rglob("*")):
            os.chown(path, NOBODY, NOBODY)
    done = subprocess.run([*prefix, sys.executable, "-m", "uploader.cli", "replay", "--config", str(config_path)],
                          capture_output=True, text=True, timeout=120, cwd=REPO, check=False)
    line = one_line_error(done, 1)
    assert f"cannot open the spool's lock file {lock} (Permission denied)" in line
    assert f"chmod -R u+rwX {spool_dir}" in line


# -- 4. --output that is a folder -------------------------------------------------------------


def test_export_output_that_is_a_folder(day_document: Path, tmp_path: Path) -> None:
    """Exit 2 (bad usage), one line; nothing written beside the folder."""
    folder = tmp_path / "exports"
    folder.mkdir()
    line = one_line_error(uploader("export", DAY.isoformat(), "--output", str(folder),
                                   "--config", str(day_document)), 2)
    assert line.startswith(f"uploader: --output {folder} is a folder. Try: give a file name")
    assert not (tmp_path / "exports.partial").exists() and list(folder.iterdir()) == []


# -- 5. a spool in use; a read-only spool ---------------------------------------------------


def test_repair_while_the_service_holds_the_spool(config_path: Path) -> None:
    """One prefix, the holder named, and a hint that fits a service (stop it), not "wait"."""
    spool_dir = load_config(config_path).spool.dir
    service = subprocess.Popen([sys.executable, "-m", "uploader.cli", "run", "--config", str(config_path)],
                               stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        wait_for(lambda: (spool_dir / "lock").is_file() and
                 (spool_dir / "lock").read_text().strip() == f"pid {service.pid}", timeout=30, what="run to start")
        line = one_line_error(uploader("repair", DAY.isoformat(), "--config", str(config_path)), 1)
    finally:
        service.send_signal(signal.SIGTERM)
        _, err = service.communicate(timeout=60)
    assert service.returncode == 0, err
    assert line == (f"uploader: the spool {spool_dir} is in use by pid {service.pid} (uploader run). Try: stop the "
                    "running service first (`systemctl stop all-api-uploader`, or Ctrl-C the `uploader run`), "
                    "then run `uploader repair` again")


# Holds the spool lock until its stdin closes; its command line reads like `uploader close-day`.
HOLDER = ("import sys, pathlib; from uploader.local.spool import Spool\n"
          "with Spool(pathlib.Path(sys.argv[1])).locked():\n"
          "    print('held', flush=True); sys.stdin.read()")


def test_replay_while_a_one_shot_command_holds_the_spool(config_path: Path) -> None:
    """Held by a one-shot command, the hint is to let it finish."""
    spool_dir = load_config(config_path).spool.dir
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(spool_dir), "uploader.cli", "close-day"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert holder.stdin is not None and holder.stdout is not None
    try:
        assert holder.stdout.readline() == "held\n"
        line = one_line_error(uploader("replay", "--config", str(config_path)), 1)
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert line.endswith(f"in use by pid {holder.pid} (uploader close-day). "
                         "Try: wait for that command to finish, then run `uploader replay` again")


@pytest.mark.parametrize("command", [["repair", DAY.isoformat()], ["replay"]])
def test_a_dry_run_needs_no_lock(day_document: Path, command: list[str]) -> None:
    """The documented way is to look first with the service running: a dry run writes nothing,
    so it works while another process holds the spool, and changes nothing."""
    config = load_config(day_document)
    before = stored_ids(config)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(config.spool.dir)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert holder.stdin is not None and holder.stdout is not None
    try:
        assert holder.stdout.readline() == "held\n"
        done = uploader(*command, "--dry-run", "--config", str(day_document))
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert done.returncode == 0, done.stderr
    assert "dry run" in done.stdout or "is sound" in done.stdout, done.stdout
    assert stored_ids(config) == before


@pytest.fixture
def read_only_spool(config_path: Path) -> Iterator[Path]:
    """The spool folder, existing and complete, on a read-only bind mount of itself."""
    spool_dir = load_config(config_path).spool.dir
    Spool(spool_dir)
    (spool_dir / "lock").write_text("")
    with read_only(spool_dir):
        yield spool_dir


def test_a_read_only_spool_says_so(config_path: Path, read_only_spool: Path) -> None:
    """Not "cannot create spool folder": the folder exists and is not writable; status still reads it."""
    line = one_line_error(uploader("replay", "--config", str(config_path)), 1)
    assert line.startswith(f"uploader: spool folder {read_only_spool} is not writable (Read-only file system). "
                           "Try: remount it read-write")
    status = uploader("status", "--config", str(config_path))
    assert status.returncode == 0 and status.stderr == "" and "0 batch(es) pending" in status.stdout


# -- 6. global options, help ------------------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["--config", "x.toml", "--stream", "odds", "--log-level", "DEBUG", "--log-format", "json", "status"],
    ["status", "--config", "x.toml", "--stream", "odds", "--log-level", "DEBUG", "--log-format", "json"],
    ["--config", "x.toml", "status", "--log-level", "DEBUG", "--stream", "odds", "--log-format", "json"],
])
def test_global_options_before_or_after_the_command(argv: list[str]) -> None:
    """Given before the command, a value is not reset by the command's default; after works too."""
    args = build_parser().parse_args(argv)
    assert (args.config, args.stream, args.log_level, args.log_format) == (Path("x.toml"), "odds", "DEBUG", "json")
    defaults = build_parser().parse_args(["status"])
    assert (defaults.config, defaults.stream, defaults.log_level, defaults.log_format) == (None, None, "INFO", "text")


def test_config_before_the_command_in_a_real_run(config_path: Path) -> None:
    done = uploader("--config", str(config_path), "--log-format", "json", "status", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["spool"] == str(load_config(config_path).spool.dir)


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_says_what_exit_codes_mean(command: str | None, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"] if command else ["--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines: compare words
    assert exited.value.code == 0
    assert "exit codes: 0 done" in out and "1 problems found" in out and "2 bad usage" in out
    assert "least severe log lines" in out and "one JSON object per line" in out  # --log-level, --log-format
    if command in ("close-day", "export", "repair"):
        assert "YYYY-MM-DD, a day in the zone of [day] timezone" in out


def test_bad_usage_is_one_line(config_path: Path) -> None:
    line = one_line_error(uploader("export", "yesterday", "--config", str(config_path)), 2)
    assert line == "uploader: argument day: not a date: 'yesterday' (use YYYY-MM-DD). Try: uploader export --help"


# -- status -----------------------------------------------------------------------------------


def test_status_with_no_service_and_an_empty_spool(config_path: Path) -> None:
    """A fresh install: no spool yet, no document; status answers, exit 0, nothing on stderr."""
    done = uploader("status", "--config", str(config_path))
    assert (done.returncode, done.stderr) == (0, "")
    assert "service        not running" in done.stdout and "0 batch(es) pending (-)" in done.stdout
    report = json.loads(uploader("status", "--json", "--config", str(config_path)).stdout)
    assert (report["stream"], report["destination"]) == ("all_api", "default")  # a config without [streams]
    assert report["spool_depth"] == 0 and report["retrying"] == {} and report["last_error"] is None
    assert report["quarantine"] == {"spans": 0, "bytes": 0, "not_sent": {"spans": 0, "bytes": 0},
                                    "sent": {"spans": 0, "bytes": 0}}


def test_status_counts_all_quarantine_sent_and_not(config_path: Path) -> None:
    """Two spans quarantined by real cuts, one since uploaded by `replay`: both counted, with bytes."""
    config = load_config(config_path)
    config.watch.file.parent.mkdir(parents=True)
    first, second = b"not a record, line one\n", b"=== FETCH END: lonely | 07/10/2025 04:15:00 PM EDT ===\n"
    append_bytes(config.watch.file, first)
    write_fetches(config, 3, pad=10)
    cut_all(config)
    assert uploader("replay", "--config", str(config_path)).returncode == 0  # sends the first span
    append_bytes(config.watch.file, second)
    cut_all(config)
    report = json.loads(uploader("status", "--json", "--config", str(config_path)).stdout)
    assert report["quarantine"] == {"spans": 2, "bytes": len(first) + len(second),
                                    "not_sent": {"spans": 1, "bytes": len(second)},
                                    "sent": {"spans": 1, "bytes": len(first)}}
    assert report["quarantine_not_sent"] == 1
    text = uploader("status", "--config", str(config_path)).stdout
    assert (f"quarantine     2 span(s), {len(first) + len(second)} B kept: 1 ({len(second)} B) not yet sent, "
            f"1 ({len(first)} B) sent to the bucket") in text
