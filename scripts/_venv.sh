# Sourced by run.sh and test.sh: make sure .venv exists and matches pyproject.toml.
# Reinstalls only when pyproject.toml changed, so repeated runs start at once.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.installed-$(sha256sum "$root/pyproject.toml" | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    echo "setting up $venv (first run, or pyproject.toml changed) ..." >&2
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
    "$venv/bin/python" -m pip install --quiet -e "$root[test]" >&2
    rm -f "$venv"/.installed-*
    touch "$stamp"
fi
