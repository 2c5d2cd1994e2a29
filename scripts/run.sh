#!/usr/bin/env bash
# Run the uploader service on ./config.toml (embedded directory bucket by default), from .venv
# with the runtime dependencies only (requirements.lock), the project installed in place.
# Extra arguments go to `uploader run`, e.g. --config /etc/uploader/config.toml.
set -euo pipefail
source "$(dirname "$0")/_venv.sh" runtime
cd "$root"
exec "$venv/bin/uploader" run "$@"
