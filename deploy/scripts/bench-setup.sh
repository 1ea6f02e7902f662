#!/usr/bin/env bash
# bench-setup: installs what `playground bench` needs beyond the Rust toolchain, from Debian's packages.
#
#   sudo bash deploy/scripts/bench-setup.sh
#
# - nginx (the package nginx-light, or nginx where that one is not offered): the baseline of the
#   gateway figure. The bench starts its own nginx as a child process, with a config it writes into a
#   temporary folder; the system's nginx service, if the package starts one, is not used.
#
# The bench itself needs no root, except `playground bench scale`, which writes cgroup v1 cpu quotas
# under /sys/fs/cgroup/cpu. Safe to run again: installed packages are left as they are.
set -euo pipefail

if command -v nginx >/dev/null 2>&1; then
    echo "bench-setup: nginx is installed: $(nginx -v 2>&1)"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "bench-setup: installing packages needs root; run it with sudo" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
if apt-cache show nginx-light >/dev/null 2>&1; then
    apt-get install -y --no-install-recommends nginx-light
else
    apt-get install -y --no-install-recommends nginx
fi
echo "bench-setup: installed $(nginx -v 2>&1)"
