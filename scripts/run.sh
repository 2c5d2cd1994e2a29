#!/usr/bin/env bash
# Run the uploader service on ./config.toml (embedded directory bucket by default).
# Extra arguments go to `uploader run`, e.g. --config /etc/uploader/config.toml.
set -euo pipefail
source "$(dirname "$0")/_venv.sh"
cd "$root"
exec "$venv/bin/uploader" run "$@"
