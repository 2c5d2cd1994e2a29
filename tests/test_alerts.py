"""The shipped Prometheus alert rules: valid for promtool, each rule unit-tested with promtool, and
each keeping the stream and destination it fires for."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "scripts" / "uploader-alerts.yml"
RULE_TESTS = Path(__file__).resolve().parent / "prometheus" / "alerts_test.yml"
ALERTS = ("UploaderDown", "UploaderAbsent", "UploaderUploadsFailing", "UploaderPermanentError",
          "UploaderSpoolGrowing", "UploaderOldestBatchStale", "UploaderYesterdayNotClosed", "UploaderStreamTrouble")


def promtool_run(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60, cwd=REPO,
                          check=False)


def test_rules_file_passes_promtool_check(promtool):
    """`promtool check rules` accepts scripts/uploader-alerts.yml and finds every alert."""
    res = promtool_run(promtool, "check", "rules", str(RULES))
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in res.stdout


def test_every_rule_fires_and_stays_quiet_as_unit_tested(promtool):
    """`promtool test rules` passes, and the unit tests cover every alert of the rules file."""
    res = promtool_run(promtool, "test", "rules", str(RULE_TESTS))
    assert res.returncode == 0, res.stdout + res.stderr
    tested = RULE_TESTS.read_text()
    assert [a for a in ALERTS if f"alertname: {a}\n" not in tested] == []
    assert sorted(ALERTS) == sorted(line.split(":", 1)[1].strip() for line in RULES.read_text().splitlines()
                                    if line.strip().startswith("- alert:"))


def test_every_uploader_rule_keeps_and_names_its_stream_and_destination():
    """Rules over uploader_* series aggregate and match by stream (and by destination wherever they
    aggregate), so one stream's trouble fires for it alone; their summaries name both."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    assert [g["name"] for g in groups] == ["all-api-uploader"]
    for rule in groups[0]["rules"]:
        expr, summary = rule["expr"], rule["annotations"]["summary"]
        if "uploader_" not in expr:
            assert 'job="all-api-uploader"' in expr, rule["alert"]  # UploaderDown, UploaderAbsent
            continue
        for clause, labels in re.findall(r"\b(by|on)\s*\(([^)]*)\)", expr):
            kept = {label.strip() for label in labels.split(",")}
            assert {"job", "instance", "stream"} <= kept, (rule["alert"], clause, kept)
            assert clause == "on" or "destination" in kept, (rule["alert"], clause, kept)
        assert "{{ $labels.stream }}" in summary, rule["alert"]
        # Only a stream's own trouble (its file) has no destination: it holds back all of them.
        assert "{{ $labels.destination }}" in summary or "uploader_stream_trouble" in expr, rule["alert"]
