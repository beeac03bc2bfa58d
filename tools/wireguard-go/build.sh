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
root=${VPBLU_WIREGUARD_GO_DIR:-$HOME/.cache/vpblu/wireguard-go}
pin_files=("$here/go.mod" "$here/go.sum")

say() { printf 'wireguard-go: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

for f in "${pin_files[@]}"; do [[ -f $f ]] || die "missing pin file $f"; done

# The pinned version, read from go.mod (no go command, no network).
version=$(awk -v m="$MODULE" '$1 == m && $2 ~ /^v/ { print $2; exit }' "$here/go.mod")
[[ -n $version ]] || die "no $MODULE requirement in $here/go.mod"

hash=$( { echo "recipe $RECIPE"; cat "${pin_files[@]}"; } | sha256sum | cut -c1-12)
key="$version-$hash"
keydir="$root/$key"
bindir="$keydir/bin"

up_to_date() { [[ -x $bindir/wireguard-go ]]; }

point_current() {
	# Replace the symlink atomically (rename over the old one).
	ln -sfn "$key/bin" "$root/.current.$$"
	mv -Tf "$root/.current.$$" "$root/current"
}

if up_to_date; then
	[[ $(readlink "$root/current" 2>/dev/null || true) == "$key/bin" ]] || point_current
	say "up to date ($bindir)"
	echo "$bindir"
	exit 0
fi

mkdir -p "$bindir" "$keydir/logs"

# One build at a time per cache root; a second caller waits, then finds the
# binary already built.
exec 9>"$root/.lock"
if ! flock -n 9; then
	say "another build holds $root/.lock; waiting"
	flock 9
fi
if up_to_date; then
	point_current
	say "built meanwhile by another caller ($bindir)"
	echo "$bindir"
	exit 0
fi

# --- Go toolchain -----------------------------------------------------------
export GOTOOLCHAIN=local CGO_ENABLED=0
go=${GO:-}
if [[ -z $go ]]; then
	if command -v go >/dev/null 2>&1; then go=go
	elif [[ -x /usr/local/go/bin/go ]]; then go=/usr/local/go/bin/go
	else die "no Go toolchain found (put go on PATH or set GO=/path/to/go)"
	fi
fi
have=$("$go" env GOVERSION) || die "'$go env GOVERSION' failed"
have=${have#go}
need=$(awk '$1 == "go" { print $2 }' "$here/go.mod")
if [[ $(printf '%s\n%s\n' "$need" "$have" | sort -V | head -1) != "$need" ]]; then
	die "Go $need or newer is needed (go.mod 'go' line); $go is go$have. GOTOOLCHAIN=local: no toolchain is downloaded"
fi

log="$keydir/logs/wireguard-go.log"
start=$SECONDS
say "building $MODULE@$version with go$have; log: $log"
cmd=("$go" build -v -mod=readonly -trimpath -ldflags "-s -w" -o "$bindir/.wireguard-go.tmp" "$MODULE")
if ! { echo "+ cd $here && ${cmd[*]}"; (cd "$here" && "${cmd[@]}"); } >"$log" 2>&1; then
	say "build FAILED after $((SECONDS - start))s; last lines of $log:"
	tail -n 40 "$log" >&2
	rm -f "$bindir/.wireguard-go.tmp"
	die "building wireguard-go failed (full log: $log)"
fi
"$bindir/.wireguard-go.tmp" --version >>"$log" 2>&1 || die "the built binary does not run (see $log)"
mv -f "$bindir/.wireguard-go.tmp" "$bindir/wireguard-go"
say "built in $((SECONDS - start))s ($(du -h "$bindir/wireguard-go" | cut -f1)): $("$bindir/wireguard-go" --version | head -1)"

up_to_date || die "binary missing after build in $bindir"
point_current
echo "$bindir"
