# Sourced by test.sh: install the Debian packages the test suite's real servers need, when missing.
# Ceph RGW (radosgw, ceph-mon, ceph-osd) is the S3 server Linode Object Storage runs; the suite
# starts a private cluster of it on loopback. Without apt-get (or root) nothing is installed and
# the Ceph tests are skipped with a loud banner, except under CI=true, where they fail.
need=()
for pair in radosgw:radosgw ceph-mon:ceph-mon ceph-osd:ceph-osd; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
    apt_log="$root/.venv/apt.log"
    if command -v apt-get >/dev/null 2>&1 && { [ -z "$sudo" ] || sudo -n true 2>/dev/null; }; then
        echo "installing Debian packages ${need[*]} for the Ceph RGW tests (about a minute, once) ..." >&2
        export DEBIAN_FRONTEND=noninteractive
        mkdir -p "$root/.venv"
        $sudo apt-get install -y --no-install-recommends "${need[@]}" >"$apt_log" 2>&1 \
            || { $sudo apt-get update >>"$apt_log" 2>&1 \
                 && $sudo apt-get install -y --no-install-recommends "${need[@]}" >>"$apt_log" 2>&1; } \
            || echo "WARNING: apt-get could not install ${need[*]} (see $apt_log); the Ceph RGW tests will not run" >&2
    else
        echo "WARNING: cannot install ${need[*]} here (no apt-get, or not root and no sudo); the Ceph RGW tests will be skipped" >&2
    fi
fi
