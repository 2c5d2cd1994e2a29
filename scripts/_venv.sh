# Sourced by run.sh and test.sh: make sure .venv holds exactly what requirements.lock pins.
# The lock pins every dependency (runtime, test, build) with hashes; the venv is rebuilt from
# scratch when the lock or pyproject.toml changes, so nothing unlocked survives an upgrade, and
# repeated runs start at once.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.installed-$(cat "$root/requirements.lock" "$root/pyproject.toml" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    echo "setting up $venv from requirements.lock (first run, or the lock changed) ..." >&2
    python3 -m venv --clear "$venv"
    "$venv/bin/python" -m pip install --quiet --require-hashes --no-deps -r "$root/requirements.lock" >&2
    # The project itself: its dependencies are all locked above, setuptools builds it in place.
    "$venv/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e "$root" >&2
    touch "$stamp"
fi
