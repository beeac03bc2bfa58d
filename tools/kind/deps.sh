#!/usr/bin/env bash
# Installs what `make kind-e2e` needs beyond `make deps`, idempotently:
# Debian's Docker engine (dockerd, containerd, runc; run privately by
# engine.sh), debootstrap for the node and tools root filesystems, jq (the
# runc wrapper), gcc with a static libc (the pause program), openssl.
set -euo pipefail

missing=()
want() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
want dockerd docker.io
want containerd containerd
want /usr/sbin/runc runc
want debootstrap debootstrap
want jq jq
want gcc gcc
want openssl openssl
[[ -f /usr/lib/x86_64-linux-gnu/libc.a ]] || missing+=(libc6-dev)

((${#missing[@]} == 0)) && exit 0
if [[ $(id -u) != 0 ]]; then
	echo "kind deps: missing ${missing[*]}; run as root (apt-get install ${missing[*]})" >&2
	exit 1
fi
echo "kind deps: apt-get install ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2 || true
apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
