"""The shipped Prometheus alert rules: valid for promtool, and each rule unit-tested with promtool."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "scripts" / "uploader-alerts.yml"
RULE_TESTS = Path(__file__).resolve().parent / "prometheus" / "alerts_test.yml"
ALERTS = ("UploaderDown", "UploaderAbsent", "UploaderUploadsFailing", "UploaderPermanentError",
          "UploaderSpoolGrowing", "UploaderOldestBatchStale", "UploaderYesterdayNotClosed")


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
