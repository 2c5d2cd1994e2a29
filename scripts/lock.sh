#!/usr/bin/env bash
# Re-create the two locks from pyproject.toml, every pin with its hashes (pip-tools, run from a
# throwaway venv):
#   requirements.lock       what a production install needs: the runtime dependencies, and
#                           setuptools, which builds the project (`pip install .`)
#   requirements-test.lock  the test venv: the same runtime pins, held by `-c requirements.lock`,
#                           plus the `test` extra (pytest, moto, hypothesis) and what they pull in
# `scripts/lock.sh --upgrade` moves every pin to the newest allowed version; without it, pins are
# kept and only what pyproject.toml changed is resolved. Other arguments go to both pip-compile
# runs. Run the tests after.
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
# Only PyPI, whatever this machine's pip settings say, and none of them written into the locks.
compile() {
    CUSTOM_COMPILE_COMMAND="scripts/lock.sh" PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= PIP_CONSTRAINT= \
        PIP_INDEX_URL= PIP_EXTRA_INDEX_URL= "$tool/bin/pip-compile" --quiet --no-emit-find-links \
        --generate-hashes --allow-unsafe --all-build-deps --strip-extras \
        --index-url https://pypi.org/simple --no-emit-index-url "$@" pyproject.toml
}
compile --output-file requirements.lock "$@"
# The runtime pins are constraints here, so every package both locks hold is at one version.
compile --extra test --constraint requirements.lock --output-file requirements-test.lock "$@"
echo "requirements.lock and requirements-test.lock written; scripts/test.sh rebuilds .venv from them" >&2
