# Sourced by test.sh: install the Debian packages the test suite's real servers need, when missing.
# Ceph RGW (radosgw, ceph-mon, ceph-osd) is the S3 server Linode Object Storage runs; the suite
# starts a private cluster of it on loopback, also over https with a CA it makes with `openssl`.
# Without apt-get (or root) nothing is installed and the Ceph tests are skipped with a loud
# banner, except under CI=true, where they fail.
# promtool (Debian package prometheus) checks and unit-tests scripts/uploader-alerts.yml; without
# it those tests are skipped with the same banner (failed under CI=true).
need=()
for pair in radosgw:radosgw ceph-mon:ceph-mon ceph-osd:ceph-osd openssl:openssl promtool:prometheus; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
    apt_log="$root/.venv/apt.log"
    if command -v apt-get >/dev/null 2>&1 && { [ -z "$sudo" ] || sudo -n true 2>/dev/null; }; then
        echo "installing Debian packages ${need[*]} for the Ceph RGW and promtool tests (about a minute, once) ..." >&2
        export DEBIAN_FRONTEND=noninteractive
        mkdir -p "$root/.venv"
        # The tests need programs, not daemons: keep the packages' services (a Prometheus server
        # on :9090) from starting, with Debian's own mechanism, unless the machine has a policy.
        policy=""
        if [ ! -e /usr/sbin/policy-rc.d ]; then
            policy=/usr/sbin/policy-rc.d
            printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null && $sudo chmod +x "$policy"
        fi
        $sudo apt-get install -y --no-install-recommends "${need[@]}" >"$apt_log" 2>&1 \
            || { $sudo apt-get update >>"$apt_log" 2>&1 \
                 && $sudo apt-get install -y --no-install-recommends "${need[@]}" >>"$apt_log" 2>&1; } \
            || echo "WARNING: apt-get could not install ${need[*]} (see $apt_log); the tests that need them will not run" >&2
        [ -z "$policy" ] || $sudo rm -f "$policy"
        if [ -d /run/systemd/system ] && systemctl is-enabled --quiet prometheus 2>/dev/null; then
            $sudo systemctl disable --now prometheus >>"$apt_log" 2>&1 || true
        fi
    else
        echo "WARNING: cannot install ${need[*]} here (no apt-get, or not root and no sudo); the tests that need them will be skipped" >&2
    fi
fi
