#!/usr/bin/env bash
# Run the whole test suite (starts its own S3 server on loopback). Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "$0")/_venv.sh"
cd "$root"
exec "$venv/bin/python" -m pytest "$@"
