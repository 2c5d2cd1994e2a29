"""[streams.NAME] and [destinations.NAME]: what a config of many streams means, that a config
without them is the one stream of before, and that every bad one is refused naming its key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from helpers import uploader

from uploader.config import config_from_dict
from uploader.errors import ConfigError

GOOD = """
[day]
timezone = "Europe/London"
[spool]
retry_interval_s = 5
max_backoff_s = 60
[destinations.linode]
backend = "s3"
[destinations.linode.s3]
bucket = "logs"
endpoint_url = "https://us-ord-1.linodeobjects.com"
[destinations.backup]
backend = "directory"
directory.path = "backup"
[streams.all_api]
file = "data/all_api.json"
spool = "data/spool"
destinations = ["linode", "backup"]
[streams.odds]
file = "data/odds.json"
spool = "data/spool-odds"
batch_size = 3
timezone = "UTC"
retry_interval_s = 1
compression = "gzip"
destinations = ["linode"]
"""


def load(tmp_path: Path, text: str):  # noqa: ANN201
    return config_from_dict(tomllib.loads(text), base=tmp_path)


def test_streams_take_the_shared_tables_as_defaults_and_each_destination_its_state(tmp_path):
    config = load(tmp_path, GOOD)
    all_api, odds = config.streams
    assert (all_api.name, all_api.watch.batch_size, all_api.day.timezone, all_api.spool.retry_interval_s) == \
        ("all_api", 10, "Europe/London", 5.0)
    assert (odds.watch.batch_size, odds.day.timezone, odds.spool.retry_interval_s, odds.spool.max_backoff_s) == \
        (3, "UTC", 1.0, 60.0)
    linode, backup = all_api.destinations
    # The first destination keeps its state at the spool's root, where one destination always had it.
    assert linode.state_dir == tmp_path / "data" / "spool"
    assert backup.state_dir == tmp_path / "data" / "spool" / "destinations" / "backup"
    assert (linode.storage.prefix, backup.storage.prefix) == ("all_api_rotating_logs", "all_api_rotating_logs")
    assert odds.destinations[0].storage.prefix == "odds_rotating_logs"
    assert odds.destinations[0].storage.compression == "gzip" and linode.storage.compression == "none"
    view = config.view(odds)
    assert (view.stream, view.destination, view.watch.file, view.state) == \
        ("odds", "linode", tmp_path / "data" / "odds.json", tmp_path / "data" / "spool-odds")
    assert (config.stream, config.destination) == ("all_api", "linode")  # the Config itself: the first of each


def test_a_config_without_streams_is_the_one_stream_of_before(tmp_path):
    config = load(tmp_path, '[storage]\nprefix = "logs"\n')
    (stream,) = config.streams
    (dest,) = stream.destinations
    assert (stream.name, dest.name, dest.state_dir, dest.storage) == ("all_api", "default", config.spool.dir,
                                                                        config.storage)
    assert config.view(stream).state == config.state == config.spool.dir


BAD = [
    (GOOD.replace('file = "data/odds.json"', 'file = "data/all_api.json"'),
     "streams.odds.file", "is also streams.all_api.file"),
    (GOOD.replace('spool = "data/spool-odds"', 'spool = "data/spool/odds"'),
     "streams.odds.spool", "overlaps streams.all_api.spool"),
    (GOOD.replace('compression = "gzip"', 'prefix = "all_api_rotating_logs"'),
     "streams.odds.prefix", "would write the keys of stream 'all_api'"),
    (GOOD.replace('compression = "gzip"', 'prefix = "all_api_rotating_logs/odds"'),
     "streams.odds.prefix", "would write the keys of stream 'all_api'"),
    (GOOD.replace('directory.path = "backup"', 'directory.path = "backup"\n[destinations.same]\nbackend = "s3"\n'
                  '[destinations.same.s3]\nbucket = "logs"\nendpoint_url = "https://us-ord-1.linodeobjects.com"')
     .replace('destinations = ["linode", "backup"]', 'destinations = ["linode", "same"]'),
     "streams.all_api.destinations", "would write the keys of stream 'all_api' in destination 'linode'"),
    (GOOD.replace('destinations = ["linode"]', 'destinations = ["linod"]'),
     "streams.odds.destinations", "names 'linod', which no [destinations.linod] table defines"),
    (GOOD.replace('destinations = ["linode"]', "destinations = []"), "streams.odds.destinations", "names no destination"),
    (GOOD.replace('destinations = ["linode"]', ""), "streams.odds.destinations", "names no destination"),
    (GOOD.replace('destinations = ["linode"]', 'destinations = ["linode", "linode"]'),
     "streams.odds.destinations", "names 'linode' twice"),
    (GOOD.replace('destinations = ["linode"]', 'destinations = "linode"'), "streams.odds.destinations", "must be a list"),
    (GOOD.replace('spool = "data/spool-odds"\n', ""), "streams.odds.spool", "is missing"),
    (GOOD.replace('file = "data/odds.json"\n', ""), "streams.odds.file", "is missing"),
    (GOOD + '[watch]\nfile = "x.json"\n', "watch", "does not apply with [streams]"),
    (GOOD + '[storage]\nbackend = "s3"\n', "storage", "does not apply with [streams]"),
    (GOOD.replace("retry_interval_s = 5\n", 'retry_interval_s = 5\ndir = "data/spool"\n'), "spool.dir",
     "does not apply with [streams]"),
    ('[destinations.linode]\nbackend = "directory"\n', "destinations", "no stream ships to them"),
    (GOOD.replace("[streams.odds]", "[streams.'odds feed']"), "streams.odds feed", "is not a usable name"),
    (GOOD.replace("batch_size = 3", "batch_size = 0"), "streams.odds.batch_size", "must be at least 1"),
    (GOOD.replace('timezone = "UTC"', 'timezone = "Mars/Olympus"'), "streams.odds.timezone", "unknown time zone"),
    (GOOD.replace("retry_interval_s = 1", "retry_interval_s = 100"), "streams.odds.max_backoff_s",
     "must not be smaller than streams.odds.retry_interval_s"),
    (GOOD.replace("batch_size = 3", "batch_szie = 3"), "streams.odds.batch_szie", "unknown key"),
    (GOOD.replace('bucket = "logs"', 'bucket = ""'), "destinations.linode.s3.bucket", "must not be empty"),
    (GOOD.replace('directory.path = "backup"', 'directory.path = "backup"\nprefix = "x"'), "destinations.backup.prefix",
     "unknown key"),
]


@pytest.mark.parametrize(("text", "key", "reason"), BAD, ids=[b[1] + ":" + b[2][:24] for b in BAD])
def test_a_bad_stream_config_is_refused_naming_the_key(tmp_path, text, key, reason):
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    assert caught.value.field == key and reason in str(caught.value), str(caught.value)


def test_the_cli_refuses_it_in_one_line_with_exit_2(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(GOOD.replace('file = "data/odds.json"', 'file = "data/all_api.json"'))
    res = uploader("status", "--config", str(path))
    assert res.returncode == 2
    assert res.stderr == ("uploader: config streams.odds.file: is also streams.all_api.file. "
                          "Try: give each stream its own file\n")
