"""What gets installed is exactly the locks: the test venv, the production install, and the
venv the scripts keep in .venv.

requirements.lock pins what the service needs (and setuptools, which builds the project);
requirements-test.lock pins the same runtime packages at the same versions plus the test extra.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import distribution, distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_LOCK = ROOT / "requirements.lock"
TEST_LOCK = ROOT / "requirements-test.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", re.MULTILINE)
# What `python -m venv` puts there itself, and the project (installed from the tree, not pinned).
NOT_LOCKED = {"pip", "all-api-uploader"}
# Never in a production install.
TEST_ONLY = {"pytest", "moto", "hypothesis"}
NEEDLE = b"../" + b"shared"  # spelled so that this file does not match itself


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _pins(lock: Path) -> dict[str, str]:
    return {_norm(n): v for n, v in PIN.findall(lock.read_text())}


def _blocks(lock: Path) -> dict[str, str]:
    """Each pin's whole entry (name, version, hashes), without the `# via` comments."""
    entries = [b for b in re.split(r"\n(?=\S)", lock.read_text()) if PIN.match(b)]
    return {_norm(PIN.match(b).group(1)): "\n".join(  # type: ignore[union-attr]
        line for line in b.splitlines() if not line.lstrip().startswith("#")) for b in entries}


def _names(requirements: list[str]) -> set[str]:
    return {_norm(Requirement(r).name) for r in requirements}


def test_installed_packages_are_exactly_the_locks() -> None:
    """The test venv: every pin of both locks at its version, and nothing that is not pinned."""
    locked = {**_pins(RUNTIME_LOCK), **_pins(TEST_LOCK)}
    installed = {_norm(d.metadata["Name"]): d.version for d in distributions()}
    wrong = sorted(f"{n} {installed[n]} (lock: {v})" for n, v in locked.items()
                   if n in installed and installed[n] != v)
    missing = sorted(f"{n}=={v}" for n, v in locked.items() if n not in installed)
    extra = sorted(f"{n}=={v}" for n, v in installed.items()
                   if n not in locked and n not in NOT_LOCKED)
    assert not (wrong or missing or extra), (
        f"the venv differs from requirements.lock + requirements-test.lock: wrong version {wrong}, "
        f"missing {missing}, not locked {extra}. Try: delete .venv and run scripts/test.sh "
        "(or scripts/lock.sh after changing pyproject.toml)"
    )


def test_every_dependency_is_locked_with_hashes() -> None:
    """Runtime and build dependencies in requirements.lock, the test extra in
    requirements-test.lock, each pin with a hash, and no index, mirror or local path in either."""
    project = _pyproject()
    runtime = _names(project["project"]["dependencies"] + project["build-system"]["requires"])
    test = _names(project["project"]["optional-dependencies"]["test"])
    assert runtime <= set(_pins(RUNTIME_LOCK)), "a dependency missing from requirements.lock"
    assert runtime | test <= set(_pins(TEST_LOCK)), "a dependency missing from the test lock"
    for lock in (RUNTIME_LOCK, TEST_LOCK):
        text = lock.read_text()
        blocks = _blocks(lock)
        assert len(blocks) == len(PIN.findall(text)), f"{lock.name}: a package pinned twice"
        assert all("--hash=sha256:" in b for b in blocks.values()), f"{lock.name}: a pin, no hash"
        options = [line for line in text.splitlines() if line.startswith("-")]
        assert options == [] and "file://" not in text, f"{lock.name} names a source: {options}"


def test_the_test_lock_keeps_the_runtime_pins() -> None:
    """Every package requirements.lock pins is in requirements-test.lock at the same version with
    the same hashes: the tests run what production runs."""
    runtime, test = _blocks(RUNTIME_LOCK), _blocks(TEST_LOCK)
    differ = sorted(n for n in runtime if test.get(n) != runtime[n])
    assert differ == [], f"pinned differently in the two locks: {differ}; run scripts/lock.sh"


def test_the_runtime_lock_holds_only_what_the_service_needs() -> None:
    """requirements.lock is pyproject.toml's runtime dependencies with everything they need (read
    from the installed metadata) and the build backend: no test package, nothing more."""
    project = _pyproject()
    need: set[str] = set()
    todo = [Requirement(r) for r in project["project"]["dependencies"]]
    while todo:
        req = todo.pop()
        name = _norm(req.name)
        if name in need or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
            continue
        need.add(name)
        todo.extend(Requirement(r) for r in distribution(name).requires or [])
    need |= _names(project["build-system"]["requires"])
    locked = set(_pins(RUNTIME_LOCK))
    assert not locked & TEST_ONLY
    assert locked == need, f"not needed: {sorted(locked - need)}, missing: {sorted(need - locked)}"


def test_version_is_pyprojects() -> None:
    """`uploader --version` says the version pyproject.toml sets."""
    out = subprocess.run([sys.executable, "-m", "uploader.cli", "--version"], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == f"uploader {_pyproject()['project']['version']}"


@pytest.mark.slow
def test_production_install_is_the_runtime_lock_alone(tmp_path: Path) -> None:
    """scripts/install.sh, as an operator runs it: a venv holding requirements.lock and the project
    (not the checkout: an installed copy), no test package, and a working `uploader`."""
    venv = tmp_path / "venv"
    done = subprocess.run(["bash", str(ROOT / "scripts" / "install.sh"), str(venv)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    probe = ("import importlib.metadata as m, json, uploader; print(json.dumps("
             "[uploader.__file__, {d.metadata['Name']: d.version for d in m.distributions()}]))")
    where, dists = json.loads(subprocess.run([str(venv / "bin" / "python"), "-c", probe],
                                             cwd=tmp_path, capture_output=True, text=True,
                                             check=True).stdout)
    installed = {_norm(n): v for n, v in dists.items()}
    assert not TEST_ONLY & set(installed), f"test packages installed: {TEST_ONLY & set(installed)}"
    expected = {**_pins(RUNTIME_LOCK), "all-api-uploader": _pyproject()["project"]["version"]}
    assert {n: v for n, v in installed.items() if n != "pip"} == expected
    assert Path(where).resolve().is_relative_to(venv.resolve()), where
    out = subprocess.run([str(venv / "bin" / "uploader"), "--version"], cwd=tmp_path,
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"uploader {_pyproject()['project']['version']}"


def test_production_install_refuses_a_folder_that_is_not_a_venv(tmp_path: Path) -> None:
    """A mistyped PREFIX is never emptied."""
    (tmp_path / "keep.txt").write_text("mine")
    done = subprocess.run(["bash", str(ROOT / "scripts" / "install.sh"), str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "not a venv" in done.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


# scripts/_venv.sh's bookkeeping, run against a stand-in python3 that only logs what it is asked.
FAKE_PYTHON = """#!/bin/sh
echo "python3 $*" >> "$VENV_LOG"
if [ "$1 $2 $3" = "-m venv --clear" ]; then
    rm -rf "$4" && mkdir -p "$4/bin"
    printf '#!/bin/sh\\necho "pip $*" >> "$VENV_LOG"\\n' > "$4/bin/python"
    chmod +x "$4/bin/python"
fi
"""


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of what _venv.sh reads, and a stand-in python3 first on PATH."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    for name in ("scripts/_venv.sh", "requirements.lock", "requirements-test.lock",
                 "pyproject.toml"):
        shutil.copy(ROOT / name, repo / name)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python3").write_text(FAKE_PYTHON)
    (tmp_path / "bin" / "python3").chmod(0o755)
    return repo


def _setup(repo: Path, mode: str) -> list[str]:
    """Source _venv.sh in `mode`; return what it did: 'venv', 'runtime', 'project', 'test'."""
    log = repo.parent / "log"
    log.write_text("")
    env = {**os.environ, "VENV_LOG": str(log),
           "PATH": f"{repo.parent / 'bin'}:{os.environ['PATH']}"}
    subprocess.run(["bash", "-c", f"source scripts/_venv.sh {mode}"], cwd=repo, env=env, check=True,
                   capture_output=True, timeout=60)
    did = []
    for line in log.read_text().splitlines():
        if "-m venv" in line:
            did.append("venv")
        elif line.endswith("requirements-test.lock"):
            did.append("test")
        elif line.endswith("requirements.lock"):
            did.append("runtime")
        elif " -e " in line:
            did.append("project")
    return did


def test_venv_stamps_follow_the_locks(checkout: Path) -> None:
    """run.sh installs the runtime lock alone; test.sh adds the test lock to that venv; any other
    change to a lock, or a venv from an older release, rebuilds it from scratch."""
    assert _setup(checkout, "runtime") == ["venv", "runtime", "project"]
    assert _setup(checkout, "runtime") == []
    assert _setup(checkout, "test") == ["test"]          # added on top, nothing rebuilt
    assert _setup(checkout, "test") == []
    assert _setup(checkout, "runtime") == []             # a test venv runs the service as well

    with (checkout / "requirements-test.lock").open("a") as f:
        f.write("# changed\n")
    assert _setup(checkout, "runtime") == []             # its runtime pins did not change
    assert _setup(checkout, "test") == ["venv", "runtime", "project", "test"]  # old test pins go

    with (checkout / "requirements.lock").open("a") as f:
        f.write("# changed\n")
    assert _setup(checkout, "runtime") == ["venv", "runtime", "project"]
    assert _setup(checkout, "test") == ["test"]

    for stamp in (checkout / ".venv").glob(".installed-*"):  # as the previous release left it
        stamp.unlink()
    (checkout / ".venv" / ".installed-0123456789abcdef").touch()
    assert _setup(checkout, "test") == ["venv", "runtime", "project", "test"]
    (checkout / ".venv" / ".installed-0123456789abcdef").touch()
    assert _setup(checkout, "runtime") == []  # the new stamps are there: the old name is ignored


def test_the_repo_points_nowhere_outside_it() -> None:
    """A clone must stand alone: no tracked file refers to a sibling folder of the checkout."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    outside = [f for f in files if (ROOT / f).is_file() and NEEDLE in (ROOT / f).read_bytes()]
    assert files and outside == []
