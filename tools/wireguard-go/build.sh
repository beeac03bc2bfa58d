#!/usr/bin/env bash
# Build the userspace WireGuard (wireguard-go) from the Go module proxy,
# pinned by tools/wireguard-go/go.{mod,sum}, into a cache outside the clone:
#
#   ${VPBLU_WIREGUARD_GO_DIR:-$HOME/.cache/vpblu/wireguard-go}/<key>/bin/wireguard-go
#   ${VPBLU_WIREGUARD_GO_DIR:-$HOME/.cache/vpblu/wireguard-go}/current -> <key>/bin
#
# <key> is derived from the pins and patches/*.patch, so the binary is
# rebuilt only when they change. The patches fix wireguard-go bugs vpblu
# found (each says what and how it was seen); they are applied, in name
# order, to a copy of the pinned module source, built through a `replace`. Progress goes to stderr; the last (only) line on stdout is the bin
# directory:   dir=$(tools/wireguard-go/build.sh | tail -1)
#
# The daemon looks for the binary at .../current/wireguard-go before falling
# back to wireguard-go on PATH (see actors/daemon/src/wireguard/userspace.rs).
#
# Environment: VPBLU_WIREGUARD_GO_DIR (cache root), GO (go binary; default:
# go on PATH, else /usr/local/go/bin/go).
set -euo pipefail

# Bump when the build recipe (flags, layout) changes, to force a rebuild.
readonly RECIPE=2
readonly MODULE=golang.zx2c4.com/wireguard

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOOL=wireguard-go
root=${VPBLU_WIREGUARD_GO_DIR:-$HOME/.cache/vpblu/wireguard-go}
pin_files=("$here/go.mod" "$here/go.sum")
patches=()
for p in "$here"/patches/*.patch; do [[ -f $p ]] && patches+=("$p"); done
pin_files+=("${patches[@]}")

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

# The pinned source, patched, in a module that replaces the pinned one.
src="$keydir/src"
rm -rf "$src"
mkdir -p "$src"
module_dir=$(cd "$here" && GOFLAGS=-mod=mod "$go" mod download -json "$MODULE@$version" |
	awk -F'"' '$2 == "Dir" { print $4 }') || die "go mod download $MODULE@$version failed"
[[ -d $module_dir ]] || die "go mod download $MODULE@$version gave no source directory"
cp -r "$module_dir" "$src/wireguard"
chmod -R u+w "$src/wireguard"
for p in "${patches[@]}"; do
	patch -d "$src/wireguard" -p1 --forward --quiet <"$p" >>"$keydir/logs/patch.log" 2>&1 ||
		die "patch $(basename "$p") does not apply to $MODULE@$version (see $keydir/logs/patch.log): refresh it for the new pin"
	say "applied $(basename "$p")"
done
mkdir -p "$src/build"
cp "$here/go.mod" "$here/go.sum" "$src/build/"
printf '\nreplace %s => ../wireguard\n' "$MODULE" >>"$src/build/go.mod"

go_build wireguard-go "$src/build" "$MODULE" -ldflags "-s -w"
"$bindir/wireguard-go" --version >>"$keydir/logs/wireguard-go.log" 2>&1 ||
	die "the built binary does not run (see $keydir/logs/wireguard-go.log)"
say "$("$bindir/wireguard-go" --version | head -1)"
cache_done
