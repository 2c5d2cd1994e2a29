"""Configuration: defaults, relative paths, and every refusal as one line with exit code 2."""

from __future__ import annotations

import subprocess
import sys
from datetime import time
from pathlib import Path

import pytest

from uploader.config import load_config
from uploader.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
FAKE_SECRET = "FAKEsecretFAKEsecretFAKEsecretFAKE0000000"


def test_shipped_config_loads_with_paths_beside_it():
    """The shipped config.toml is valid; its relative paths resolve against its own folder."""
    cfg = load_config(REPO / "config.toml")
    assert cfg.watch.file == REPO / "data" / "all_api.json"
    assert cfg.spool.dir == REPO / "data" / "spool"
    assert cfg.storage.directory.path == REPO / "data" / "bucket"
    assert cfg.watch.batch_size == 10 and cfg.day.close_out_at == time(0, 0, 30)
    assert cfg.storage.backend == "directory"


def test_checksum_mode_defaults_by_endpoint(tmp_path):
    """Non-AWS endpoints get when_required checksums (Ceph RGW); AWS keeps boto3's default."""
    linode = tmp_path / "l.toml"
    linode.write_text('[storage.s3]\nendpoint_url = "https://us-ord-1.linodeobjects.com"\n')
    assert load_config(linode).storage.s3.checksum_mode == ("when_required", "when_required")
    aws = tmp_path / "a.toml"
    aws.write_text('[storage.s3]\nendpoint_url = "https://s3.us-east-1.amazonaws.com"\n')
    assert load_config(aws).storage.s3.checksum_mode == ("when_supported", "when_supported")


@pytest.mark.parametrize(
    ("toml", "expect"),
    [
        ('[watch]\nfiel = "x"\n', "watch.fiel: unknown key"),
        ("[watch]\nbatch_size = 0\n", "watch.batch_size: must be at least 1"),
        ('[watch]\nbatch_size = "10"\n', "watch.batch_size: must be an integer"),
        ("[watch]\nbatch_size = true\n", "watch.batch_size: must be an integer"),
        ('[day]\ntimezone = "Mars/Olympus"\n', "day.timezone: unknown time zone"),
        ('[day]\nclose_out_at = "25:00"\n', "day.close_out_at: not a time of day"),
        ('[day]\nclose_out_at = "00:00:30+02:00"\n', "day.close_out_at: not a time of day"),
        ("[spool]\nretry_interval_s = 0\n", "spool.retry_interval_s: must be greater than 0"),
        ('[storage]\nbackend = "ftp"\n', "storage.backend: unknown backend"),
        ('[storage.s3]\nendpoint_url = "http://objects.example.com"\n', "plain http to a non-loopback host"),
        (f'[storage.s3]\naws_secret_access_key = "{FAKE_SECRET}"\n', "credentials do not belong in the config file"),
        ('[storage.s3]\naws_access_key_id = "FAKEKEYID"\n', "credentials do not belong in the config file"),
        ('[bogus]\nx = 1\n', "bogus: unknown key"),
        ('[storage.s3]\nca_bundle = "missing.pem"\n', "storage.s3.ca_bundle: cannot read"),
        ('[storage.s3]\nca_bundle = "config.toml"\n', "storage.s3.ca_bundle: "),
        ('[storage.s3]\nca_bundle = "."\n', "storage.s3.ca_bundle: "),
        ("[watch\n", "not valid TOML"),
    ],
)
def test_bad_config_is_refused_in_one_line(tmp_path, toml, expect):
    """A bad config exits 2 with one line naming the key, no traceback, and never echoes a secret."""
    path = tmp_path / "config.toml"
    path.write_text(toml)
    proc = subprocess.run([sys.executable, "-m", "uploader.cli", "check", "--config", str(path)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert expect in lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert FAKE_SECRET not in proc.stderr


def test_insecure_http_allowed_when_asked_or_loopback(tmp_path):
    """http:// is accepted for loopback hosts, and elsewhere only with allow_insecure_http."""
    path = tmp_path / "c.toml"
    path.write_text('[storage.s3]\nendpoint_url = "http://127.0.0.1:9000"\n')
    assert load_config(path).storage.s3.endpoint_url == "http://127.0.0.1:9000"
    path.write_text('[storage.s3]\nendpoint_url = "http://minio.lan:9000"\nallow_insecure_http = true\n')
    assert load_config(path).storage.s3.allow_insecure_http


def test_missing_config_file_says_how_to_point_at_one(tmp_path):
    """No config file: exit 2 and a hint about --config / UPLOADER_CONFIG."""
    proc = subprocess.run([sys.executable, "-m", "uploader.cli", "check", "--config", str(tmp_path / "nope.toml")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "UPLOADER_CONFIG" in proc.stderr and "Traceback" not in proc.stderr


def test_ca_bundle_resolves_beside_the_config_file(tmp_path):
    """A relative storage.s3.ca_bundle resolves against the config file's folder, like every path."""
    from botocore.httpsession import DEFAULT_CA_BUNDLE

    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.pem").write_bytes(Path(DEFAULT_CA_BUNDLE).read_bytes())
    path = tmp_path / "c.toml"
    path.write_text('[storage.s3]\nendpoint_url = "https://objects.example.com"\nca_bundle = "certs/ca.pem"\n')
    assert load_config(path).storage.s3.ca_bundle == tmp_path / "certs" / "ca.pem"
    path.write_text('[storage.s3]\nendpoint_url = "https://objects.example.com"\n')
    assert load_config(path).storage.s3.ca_bundle is None


def test_retention_days_is_unset_by_default_and_read_when_given(tmp_path):
    """storage.retention_days defaults to unset (keep for ever) and is read as an integer."""
    path = tmp_path / "c.toml"
    path.write_text("[storage]\n")
    assert load_config(path).storage.retention_days is None
    path.write_text("[storage]\nretention_days = 30\n")
    assert load_config(path).storage.retention_days == 30


@pytest.mark.parametrize(
    ("value", "expect"),
    [("0", "must be at least 1"), ("-3", "must be at least 1"), ('"30"', "must be an integer"),
     ("1.5", "must be an integer"), ("true", "must be an integer")],
)
def test_bad_retention_days_is_refused_naming_the_key(tmp_path, value, expect):
    """A retention below one day, or not an integer, is refused with the key named."""
    path = tmp_path / "c.toml"
    path.write_text(f"[storage]\nretention_days = {value}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"config storage.retention_days: {expect}")


# -- streams.NAME.document_name ------------------------------------------------------------------

_TWO_STREAMS = """
[destinations.main]
backend = "directory"
[streams.all_api]
file = "data/all_api.json"
spool = "data/spool/all_api"
destinations = ["main"]
[streams.odds]
file = "data/odds.json"
spool = "data/spool/odds"
destinations = ["main"]
"""


def test_document_name_defaults_per_stream_and_is_read_when_given(tmp_path):
    """Without document_name a stream's day documents are "<NAME>_json_log_{date}.json" (all_api
    keeps the seed's name, as does a config without [streams]); a name given is carried on every
    destination's StorageConfig as written."""
    from uploader import daily
    from uploader.config import StorageConfig
    from uploader.store import lifecycle

    path = tmp_path / "c.toml"
    path.write_text("[storage]\n")
    assert load_config(path).storage.document_name == "all_api_json_log_{date}.json"
    # The seed's name is written in three layers that may not import each other: kept equal.
    assert StorageConfig().document_name == daily.DEFAULT_NAME == lifecycle.DEFAULT_DOCUMENT_NAME
    path.write_text(_TWO_STREAMS)
    names = {s.name: s.destinations[0].storage.document_name for s in load_config(path).streams}
    assert names == {"all_api": "all_api_json_log_{date}.json", "odds": "odds_json_log_{date}.json"}
    path.write_text(_TWO_STREAMS + 'document_name = "Odds-v2_{date}.feed.json"\n')
    names = {s.name: s.destinations[0].storage.document_name for s in load_config(path).streams}
    assert names == {"all_api": "all_api_json_log_{date}.json", "odds": "Odds-v2_{date}.feed.json"}


@pytest.mark.parametrize(
    ("value", "expect"),
    [
        ('""', "must hold {date} exactly once"),
        ('"odds.json"', "must hold {date} exactly once"),
        ('"odds_{date}_{date}.json"', "must hold {date} exactly once"),
        ('"odds_{day}_{date}.json"', "no other brace"),
        ('"odds_{date}}.json"', "no other brace"),
        ('"odds_{date}"', "does not end in .json"),
        ('"odds_{date}.json.gz"', "does not end in .json"),
        ('"odds/{date}.json"', "holds a '/'"),
        ('"odds {date}.json"', "holds ' '"),
        ('"odds\\t{date}.json"', "holds '\\t'"),
        ('"odds_é_{date}.json"', "holds 'é'"),
        ('"{date}.json"', "does not start with a letter or digit"),
        ('"{date}_odds.json"', "does not start with a letter or digit"),
        ('".odds_{date}.json"', "does not start with a letter or digit"),
        ('"_{date}.json"', "does not start with a letter or digit"),
        ('"quarantine{date}.json"', "begins as quarantine/ does"),
        ('"q{date}.json"', "begins as quarantine/ does"),
        ("7", "must be a string"),
    ],
)
def test_bad_document_name_is_refused_naming_the_key(tmp_path, value, expect):
    """A document name that is not one path component of printable ASCII holding {date} once,
    ending in .json, starting with a letter or digit and not as quarantine/ does, is refused
    naming streams.NAME.document_name, with a hint showing a good one."""
    path = tmp_path / "c.toml"
    path.write_text(_TWO_STREAMS + f"document_name = {value}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.field == "streams.odds.document_name"
    assert str(caught.value).startswith("config streams.odds.document_name: ") and expect in caught.value.reason
    if value != "7":
        assert 'write it like "odds_json_log_{date}.json"' in (caught.value.hint or "")


@pytest.mark.parametrize(("table", "key"), [("storage", "storage.document_name"),
                                            ("destinations.main", "destinations.main.document_name")])
def test_document_name_belongs_to_a_stream_only(tmp_path, table, key):
    """document_name is a stream's key: in [storage] (which keeps the seed's name) or in a
    destination it is an unknown key, refused by name; `check` says so in one line, exit 2."""
    path = tmp_path / "config.toml"
    line = 'document_name = "x_{date}.json"\n'
    path.write_text(f"[storage]\n{line}" if table == "storage" else
                    _TWO_STREAMS.replace("[destinations.main]\n", f"[destinations.main]\n{line}"))
    proc = subprocess.run([sys.executable, "-m", "uploader.cli", "check", "--config", str(path)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert f"{key}: unknown key" in proc.stderr
