#!/usr/bin/env bash
# Run the whole test suite. It starts its own S3 servers on loopback: moto, and Ceph RGW (the
# server Linode runs), whose Debian packages are installed first when missing. Extra arguments
# go to pytest.
set -euo pipefail
source "$(dirname "$0")/_venv.sh"
source "$(dirname "$0")/_system_packages.sh"
cd "$root"
exec "$venv/bin/python" -m pytest "$@"
