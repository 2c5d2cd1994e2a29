#!/usr/bin/env bash
# Re-create requirements.lock from pyproject.toml, every pin with its hashes (pip-tools, run from
# a throwaway venv). `scripts/lock.sh --upgrade` moves every pin to the newest allowed version;
# without it, pins are kept and only what pyproject.toml changed is resolved. Run the tests after.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tool="$(mktemp -d)"
trap 'rm -rf "$tool"' EXIT
# pip-compile resolves for the Python that runs it: lock for the oldest one supported, so no pin
# needs a newer Python than pyproject.toml promises.
want="$(sed -n 's/^requires-python = ">=\([0-9.]*\)"/\1/p' "$root/pyproject.toml")"
have="$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [ "$have" != "$want" ]; then
    echo "scripts/lock.sh: python3 is $have; lock with Python $want, the oldest pyproject.toml allows (e.g. PATH=/path/to/python$want/bin:\$PATH scripts/lock.sh)" >&2
    exit 2
fi
python3 -m venv "$tool"
"$tool/bin/python" -m pip install --quiet "pip-tools>=7.4,<8"
cd "$root"
# Only PyPI, whatever this machine's pip settings say, and none of them written into the lock.
CUSTOM_COMPILE_COMMAND="scripts/lock.sh" PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= "$tool/bin/pip-compile" --quiet --no-emit-find-links --generate-hashes --allow-unsafe --all-build-deps --extra test \
    --strip-extras --index-url https://pypi.org/simple --no-emit-index-url \
    --output-file requirements.lock "$@" pyproject.toml
echo "requirements.lock written; scripts/test.sh rebuilds .venv from it" >&2
