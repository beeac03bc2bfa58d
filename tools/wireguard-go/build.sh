#!/usr/bin/env bash
# Build the userspace WireGuard (wireguard-go) from the Go module proxy,
# pinned by tools/wireguard-go/go.{mod,sum}, into a cache outside the clone:
#
#   ${VPBLU_WIREGUARD_GO_DIR:-$HOME/.cache/vpblu/wireguard-go}/<key>/bin/wireguard-go
#   ${VPBLU_WIREGUARD_GO_DIR:-$HOME/.cache/vpblu/wireguard-go}/current -> <key>/bin
#
# <key> is derived from the pins, so the binary is rebuilt only when they
# change. Progress goes to stderr; the last (only) line on stdout is the bin
# directory:   dir=$(tools/wireguard-go/build.sh | tail -1)
#
# The daemon looks for the binary at .../current/wireguard-go before falling
# back to wireguard-go on PATH (see actors/daemon/src/wireguard/userspace.rs).
#
# Environment: VPBLU_WIREGUARD_GO_DIR (cache root), GO (go binary; default:
# go on PATH, else /usr/local/go/bin/go).
set -euo pipefail

# Bump when the build recipe (flags, layout) changes, to force a rebuild.
readonly RECIPE=1
readonly MODULE=golang.zx2c4.com/wireguard

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOOL=wireguard-go
root=${VPBLU_WIREGUARD_GO_DIR:-$HOME/.cache/vpblu/wireguard-go}
pin_files=("$here/go.mod" "$here/go.sum")

# The pinned version, read from go.mod (no go command, no network).
version=$(awk -v m="$MODULE" '$1 == m && $2 ~ /^v/ { print $2; exit }' "$here/go.mod")
[[ -n $version ]] || { echo "wireguard-go: error: no $MODULE requirement in $here/go.mod" >&2; exit 1; }
label=$version

up_to_date() { [[ -x $bindir/wireguard-go ]]; }

# shellcheck source=tools/go-cached-build.sh
source "$here/../go-cached-build.sh"
cache_fast_path
cache_lock
go_toolchain

go_build wireguard-go "$here" "$MODULE" -ldflags "-s -w"
"$bindir/wireguard-go" --version >>"$keydir/logs/wireguard-go.log" 2>&1 ||
	die "the built binary does not run (see $keydir/logs/wireguard-go.log)"
say "$("$bindir/wireguard-go" --version | head -1)"
cache_done
