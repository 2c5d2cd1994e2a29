"""The environment the suite runs in is exactly the lock: what a fresh clone installs."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib.metadata import distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", re.MULTILINE)
# What `python -m venv` puts there itself, and the project (installed from the tree, not pinned).
NOT_LOCKED = {"pip", "all-api-uploader"}
NEEDLE = b"../" + b"shared"  # spelled so that this file does not match itself


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_installed_packages_are_exactly_the_lock() -> None:
    """Every pin installed at its version, and nothing installed that is not pinned."""
    locked = {_norm(n): v for n, v in PIN.findall((ROOT / "requirements.lock").read_text())}
    installed = {_norm(d.metadata["Name"]): d.version for d in distributions()}
    wrong = sorted(f"{n} {installed[n]} (lock: {v})" for n, v in locked.items()
                   if n in installed and installed[n] != v)
    missing = sorted(f"{n}=={v}" for n, v in locked.items() if n not in installed)
    extra = sorted(f"{n}=={v}" for n, v in installed.items() if n not in locked and n not in NOT_LOCKED)
    assert not (wrong or missing or extra), (
        f"the venv differs from requirements.lock: wrong version {wrong}, missing {missing}, "
        f"not locked {extra}. Try: delete .venv and run scripts/test.sh "
        "(or scripts/lock.sh after changing pyproject.toml)"
    )


def test_every_dependency_is_locked_with_hashes() -> None:
    """pyproject.toml's runtime and test dependencies are all pinned, each pin with a hash."""
    text = (ROOT / "requirements.lock").read_text()
    names = {_norm(n) for n, _ in PIN.findall(text)}
    declared = _project()["dependencies"] + _project()["optional-dependencies"]["test"]
    assert {_norm(re.split(r"[\[<>=!~; ]", d, maxsplit=1)[0]) for d in declared} <= names
    pins = [block for block in re.split(r"\n(?=\S)", text) if PIN.match(block)]
    assert len(pins) == len(names) and all("--hash=sha256:" in b for b in pins), "a pin without a hash"


def test_version_is_pyprojects() -> None:
    """`uploader --version` says the version pyproject.toml sets."""
    out = subprocess.run([sys.executable, "-m", "uploader.cli", "--version"], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == f"uploader {_project()['version']}"


def test_the_repo_points_nowhere_outside_it() -> None:
    """A clone must stand alone: no tracked file refers to a sibling folder of the checkout."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    outside = [f for f in files if (ROOT / f).is_file() and NEEDLE in (ROOT / f).read_bytes()]
    assert files and outside == []
