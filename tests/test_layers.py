"""The package's import rules (docs/ARCHITECTURE.md, "Layout"), read from every module's AST."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "uploader"

# Layers, lowest first: a module may import its own group and groups of a lower rank only.
RANKS = {
    "base": 0,
    "local": 1, "store": 1,
    "daily": 2,
    "publish": 3,
    "metrics": 4, "commands": 4,
    "service": 5,
    "entry": 6,
}
BASE = {"uploader", "uploader.errors", "uploader.config", "uploader.config.tables", "uploader.config.streams",
        "uploader.s3_config", "uploader.files", "uploader.stamps",
        "uploader.schedule", "uploader.retry", "uploader.recorder", "uploader.threads"}
ENTRY = {"uploader.cli", "uploader.logs", "uploader.fetchlog"}
FORBIDDEN = {("service", "commands")}  # the service runs; the operator commands are the CLI's

PURE = {
    "uploader.stamps", "uploader.schedule", "uploader.retry", "uploader.recorder", "uploader.threads",
    "uploader.local.records", "uploader.local.batch", "uploader.local.plan",
    "uploader.store.capabilities", "uploader.store.lifecycle",
    "uploader.daily", "uploader.daily.reading", "uploader.daily.salvage", "uploader.daily.repair_plan", "uploader.daily.verifier",
    "uploader.publish.plan", "uploader.daily.gzip_form", "uploader.commands.agree",
}
# What a pure module may not import: disk, network, processes, threads, clocks, logging, and
# the libraries that do those.
IMPURE = {
    "os", "io", "pathlib", "shutil", "tempfile", "fcntl", "socket", "select", "signal", "subprocess",
    "threading", "multiprocessing", "asyncio", "time", "random", "logging", "urllib", "http", "wsgiref",
    "boto3", "botocore", "watchdog", "prometheus_client", "tqdm", "apscheduler.schedulers",
}


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def group(module: str) -> str:
    if module in BASE:
        return "base"
    if module in ENTRY:
        return "entry"
    parts = module.split(".")
    assert len(parts) >= 2, module
    return parts[1]


def imports(module: str, path: Path) -> set[str]:
    """Every module ``module`` imports, inside functions and TYPE_CHECKING blocks too."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
            # `from uploader.daily import reading` imports the module uploader.daily.reading
            found.update(f"{name}.{a.name}" for a in node.names if f"{name}.{a.name}" in MODULES)
    return found


MODULES = modules()


def own(name: str) -> str | None:
    """The package module ``name`` refers to, or None for another library."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def test_every_module_has_a_layer() -> None:
    """Each module of the package belongs to a layer of the table."""
    assert {group(m) for m in MODULES} <= set(RANKS)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module: str) -> None:
    """A module imports its own layer or lower ones, never a higher or a sibling layer."""
    mine = group(module)
    wrong = []
    for name in imports(module, MODULES[module]):
        target = own(name) if name.startswith("uploader") else None
        if target is None or target == module:
            continue
        theirs = group(target)
        if theirs == mine:
            continue
        if RANKS[theirs] >= RANKS[mine] or (mine, theirs) in FORBIDDEN:
            wrong.append(f"{target} ({theirs})")
    assert not wrong, f"{module} ({mine}) imports up or sideways: {', '.join(sorted(wrong))}"


@pytest.mark.parametrize("module", sorted(PURE))
def test_pure_modules_import_no_io(module: str) -> None:
    """A pure module imports nothing that does I/O, and no module of the package that is not pure."""
    bad = []
    for name in imports(module, MODULES[module]):
        if name.startswith("uploader"):
            target = own(name)
            if target not in PURE and target != "uploader.errors":
                bad.append(name)
        elif any(name == i or name.startswith(i + ".") for i in IMPURE):
            bad.append(name)
    assert not bad, f"pure module {module} imports {', '.join(sorted(bad))}"


def test_the_rules_catch_a_wrong_import(tmp_path: Path) -> None:
    """The checks see an upward import and an I/O import where one is written."""
    up = tmp_path / "up.py"
    up.write_text("def f():\n    from uploader.service import Service\n")
    assert own("uploader.service.Service") == "uploader.service"
    assert "uploader.service" in imports("uploader.local.cut", up)
    io = tmp_path / "io.py"
    io.write_text("import os.path\nfrom .records import scan\n")
    found = imports("uploader.local.plan", io)
    assert "os.path" in found and "uploader.local.records" in found
