#!/usr/bin/env bash
# Emulated validation of the aarch64 target: deploy bundles run under qemu-user as Cortex-A72 (Raspberry Pi 4,
# no dot product) and Cortex-A76 (Raspberry Pi 5, sdot), compared with LiteRT BUILTIN_REF outputs made on
# this host. Outside CI: it takes minutes (the first time, debootstrap alone about 5).
#
# Usage:  bash scripts/arm_check.sh [scripts/arm_check.py options, e.g. --models ds_cnn --cpus cortex-a76]
#
# Needs root (debootstrap, chroot) and Debian's qemu-user-static, binfmt-support and debootstrap, which it
# installs with apt-get when missing. The arm64 root (Debian bookworm with numpy and numba in /opt/venv) is
# made once and kept in $TOSAIC_ARM_ROOT (default ~/.cache/tosaic/arm64-root).
set -euo pipefail

ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ARM_ROOT="${TOSAIC_ARM_ROOT:-$HOME/.cache/tosaic/arm64-root}"
NUMPY_VERSION="2.4.6"
NUMBA_VERSION="0.68.1"

if ! command -v qemu-aarch64-static >/dev/null || ! command -v debootstrap >/dev/null; then
    apt-get update -qq
    apt-get install -y -qq qemu-user-static binfmt-support debootstrap
fi
# The handler is installed but disabled on these machines; without it debootstrap says
# "arm64: not supported on this machine/kernel" and chroot cannot exec arm64 binaries.
update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true

if [[ ! -x "$ARM_ROOT/opt/venv/bin/python" ]]; then
    if [[ ! -x "$ARM_ROOT/usr/bin/python3" ]]; then
        echo "making the arm64 root in $ARM_ROOT (debootstrap, about 5 minutes)"
        mkdir -p "$ARM_ROOT"
        debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,ca-certificates \
            bookworm "$ARM_ROOT" http://deb.debian.org/debian
    fi
    # pip inside the root needs name resolution and this host's CA bundle.
    cp /etc/resolv.conf "$ARM_ROOT/etc/resolv.conf"
    cp /etc/ssl/certs/ca-certificates.crt "$ARM_ROOT/etc/ssl/certs/ca-certificates.crt"
    echo "installing numpy $NUMPY_VERSION and numba $NUMBA_VERSION in the arm64 root (about 1 minute)"
    chroot "$ARM_ROOT" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root /usr/bin/python3 -m venv /opt/venv
    chroot "$ARM_ROOT" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root \
        /opt/venv/bin/pip install --quiet "numpy==$NUMPY_VERSION" "numba==$NUMBA_VERSION"
fi

exec "$ROOT_DIR/.venv/bin/python" "$ROOT_DIR/scripts/arm_check.py" --root "$ARM_ROOT" "$@"
