#!/usr/bin/env bash
# Installs what `make kvm-validate` needs beyond `make test`'s tools,
# idempotently: QEMU, debootstrap (the guest image), a static busybox (its
# initrd) and cpio.
set -euo pipefail
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
missing=()
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v cpio >/dev/null || missing+=(cpio)
file -L /bin/busybox 2>/dev/null | grep -q 'statically linked' || missing+=(busybox-static)
command -v file >/dev/null || missing+=(file)
((${#missing[@]})) || exit 0
if [[ $(id -u) -ne 0 ]]; then
  echo "kvm/install-deps: missing packages ${missing[*]}; run as root or: apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "kvm/install-deps: apt-get install ${missing[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
