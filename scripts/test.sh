#!/usr/bin/env bash
# Run the whole test suite: the developer's and CI's command, not a production install (that is
# scripts/install.sh). It sets up .venv with the runtime and the test locks, and starts its own
# S3 servers on loopback: moto, and Ceph RGW (the server Linode runs), whose Debian packages
# (with prometheus, for promtool) are installed first when missing. Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "$0")/_venv.sh" test
source "$(dirname "$0")/_system_packages.sh"
cd "$root"
# On every core, a test file per worker: the tests mostly wait on servers and subprocesses. Each
# worker starts its own moto and Ceph RGW. Give -n (or -p no:xdist) to choose otherwise.
parallel=(-n auto --dist loadfile)
for arg in "$@"; do
    case "$arg" in -n*|--numprocesses*|no:xdist) parallel=() ;; esac
done
exec "$venv/bin/python" -m pytest "${parallel[@]}" "$@"
