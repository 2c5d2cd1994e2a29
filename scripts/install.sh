#!/usr/bin/env bash
# Production install: a fresh venv at PREFIX (default: .venv in this checkout, where the shipped
# systemd unit looks) with exactly what requirements.lock pins, every file checked against its
# hash, and the project itself. Nothing else: no test dependencies, no apt, no servers.
#
#   scripts/install.sh [PREFIX]
#
# An existing venv at PREFIX is replaced (stop the service first). Python: python3 from PATH, or
# the one $PYTHON names, at least the version pyproject.toml requires. pip's own settings (a
# proxy, a mirror) are used as they are; the hashes make every source give the same files.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
prefix="${1:-$root/.venv}"
python="${PYTHON:-python3}"

want="$(sed -n 's/^requires-python = ">=\([0-9.]*\)"/\1/p' "$root/pyproject.toml")"
if ! "$python" -c "import sys; sys.exit(sys.version_info[:2] < tuple(map(int, '$want'.split('.'))))"; then
    echo "scripts/install.sh: $python is $("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])'); the uploader needs Python $want or newer (set PYTHON=/path/to/python3.X)" >&2
    exit 2
fi
# Replace only a venv, never a folder that holds something else (a mistyped PREFIX).
if [ -e "$prefix" ] && [ ! -f "$prefix/pyvenv.cfg" ] && [ -n "$(ls -A "$prefix" 2>/dev/null || echo x)" ]; then
    echo "scripts/install.sh: $prefix exists and is not a venv; give an empty or new folder" >&2
    exit 2
fi

echo "installing the uploader into $prefix from requirements.lock ..." >&2
"$python" -m venv --clear "$prefix"
"$prefix/bin/python" -m pip install --quiet --require-hashes --no-deps -r "$root/requirements.lock" >&2
# The project: its dependencies are all installed above; setuptools, pinned in the lock, builds it,
# from a copy of what pyproject.toml packages, so the checkout is left as it was (no build/ whose
# stale modules a later build would ship, and a read-only checkout works).
src="$(mktemp -d)"
trap 'rm -rf "$src"' EXIT
cp -R "$root/pyproject.toml" "$root/README.md" "$root/uploader" "$src/"
"$prefix/bin/python" -m pip install --quiet --no-deps --no-build-isolation "$src" >&2
"$prefix/bin/python" -m pip check >&2
echo "$("$prefix/bin/uploader" --version) installed in $prefix ($(du -sh "$prefix" | cut -f1)); run it as $prefix/bin/uploader" >&2
