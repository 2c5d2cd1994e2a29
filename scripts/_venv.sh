# Sourced by run.sh (`source _venv.sh runtime`) and test.sh (`source _venv.sh test`): make sure
# .venv holds exactly what the locks pin, with the project installed in place (editable).
#   runtime: requirements.lock (what the service needs)
#   test:    requirements.lock + requirements-test.lock (the same runtime pins, plus the test
#            extra: pytest, moto, hypothesis)
# A stamp file in .venv names what is installed and the hash of the files it came from. A venv
# made by run.sh gets the test extra added when test.sh first runs; any other change to the locks
# or pyproject.toml (or a venv from an older release, whose stamp is named differently) rebuilds
# .venv from scratch, so nothing unlocked survives an upgrade. Repeated runs start at once.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
_want="${1:?_venv.sh: say runtime or test}"
_hash() { cat "$@" | sha256sum | cut -c1-16; }
runtime_stamp="$venv/.installed-runtime-$(_hash "$root/requirements.lock" "$root/pyproject.toml")"
test_stamp="$venv/.installed-test-$(_hash "$root/requirements.lock" "$root/requirements-test.lock" "$root/pyproject.toml")"

_install_runtime() {
    echo "setting up $venv from requirements.lock (first run, or the lock changed) ..." >&2
    python3 -m venv --clear "$venv"
    "$venv/bin/python" -m pip install --quiet --require-hashes --no-deps -r "$root/requirements.lock" >&2
    # The project itself: its dependencies are all locked above, setuptools (locked too) builds it
    # in place.
    "$venv/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e "$root" >&2
    touch "$runtime_stamp"
}

_install_test() {
    echo "adding the test dependencies from requirements-test.lock to $venv ..." >&2
    # A superset of requirements.lock at the same versions and hashes: only the test pins install.
    "$venv/bin/python" -m pip install --quiet --require-hashes --no-deps -r "$root/requirements-test.lock" >&2
    touch "$test_stamp"
}

if [ "$_want" = runtime ]; then
    # A test venv of the same runtime lock serves as well: its runtime pins are the same.
    [ -f "$runtime_stamp" ] || _install_runtime
elif [ "$_want" = test ]; then
    if [ ! -f "$test_stamp" ]; then
        # Add to a runtime-only venv; rebuild one that holds other test pins (or an old stamp).
        if [ ! -f "$runtime_stamp" ] || compgen -G "$venv/.installed-test-*" >/dev/null; then
            _install_runtime
        fi
        _install_test
    fi
else
    echo "_venv.sh: say runtime or test, not $_want" >&2
    exit 2
fi
unset _want
