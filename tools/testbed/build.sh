#!/usr/bin/env bash
# Build a real kube-apiserver and etcd from the Go module proxy, pinned by
# tools/testbed/{apiserver,etcd}/go.{mod,sum}, into a cache outside the clone:
#
#   ${VPBLU_TESTBED_DIR:-$HOME/.cache/vpblu/testbed}/<key>/bin/{kube-apiserver,etcd}
#   ${VPBLU_TESTBED_DIR:-$HOME/.cache/vpblu/testbed}/current -> <key>/bin
#
# <key> is derived from the pins, so the binaries are rebuilt only when the
# pins change. Progress goes to stderr; the last (only) line on stdout is the
# bin directory:   dir=$(tools/testbed/build.sh | tail -1)
#
# `build.sh kubectl` also builds a matching kubectl into the same bin dir
# (for people; the tests do not need it). make testbed-up asks for it when
# no kubectl is on PATH.
#
# Environment: VPBLU_TESTBED_DIR (cache root), GO (go binary; default: go on
# PATH, else /usr/local/go/bin/go).
set -euo pipefail

want_kubectl=""
case "${1:-}" in
"") ;;
kubectl) want_kubectl=1 ;;
*) printf 'usage: %s [kubectl]\n' "$0" >&2; exit 2 ;;
esac

# Bump when the build recipe (flags, layout) changes, to force a rebuild.
readonly RECIPE=1

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=${VPBLU_TESTBED_DIR:-$HOME/.cache/vpblu/testbed}
pin_files=("$here/apiserver/go.mod" "$here/apiserver/go.sum" "$here/etcd/go.mod" "$here/etcd/go.sum")

say() { printf 'testbed: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# The version a module requires, read from go.mod (no go command, no network).
pinned() { awk -v m="$2" '$1 == m && $2 ~ /^v/ { print $2; exit }' "$1"; }

k8s_version=$(pinned "$here/apiserver/go.mod" k8s.io/kubernetes)
etcd_version=$(pinned "$here/etcd/go.mod" go.etcd.io/etcd/server/v3)
[[ -n $k8s_version ]] || die "no k8s.io/kubernetes requirement in $here/apiserver/go.mod"
[[ -n $etcd_version ]] || die "no go.etcd.io/etcd/server/v3 requirement in $here/etcd/go.mod"

hash=$( { echo "recipe $RECIPE"; cat "${pin_files[@]}"; } | sha256sum | cut -c1-12)
key="k8s-$k8s_version-etcd-$etcd_version-$hash"
keydir="$root/$key"
bindir="$keydir/bin"

up_to_date() { [[ -x $bindir/kube-apiserver && -x $bindir/etcd && ( -z $want_kubectl || -x $bindir/kubectl ) ]]; }

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
# binaries already built.
exec 9>"$root/.lock"
if ! flock -n 9; then
	say "another build holds $root/.lock; waiting"
	flock 9
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
need=$(awk '$1 == "go" { print $2 }' "$here/apiserver/go.mod" "$here/etcd/go.mod" | sort -V | tail -1)
if [[ $(printf '%s\n%s\n' "$need" "$have" | sort -V | head -1) != "$need" ]]; then
	die "Go $need or newer is needed (go.mod 'go' line); $go is go$have. GOTOOLCHAIN=local: no toolchain is downloaded"
fi

# build NAME MODULE_DIR PACKAGE [extra go build args...]
build() {
	local name=$1 dir=$2 pkg=$3
	shift 3
	local log="$keydir/logs/$name.log" start=$SECONDS
	if [[ -x $bindir/$name ]]; then
		say "$name: already built"
		return 0
	fi
	say "building $name ($pkg) with go$have; log: $log"
	local cmd=("$go" build -v -mod=readonly -trimpath "$@" -o "$bindir/.$name.tmp" "$pkg")
	if ! { echo "+ cd $dir && ${cmd[*]}"; (cd "$dir" && "${cmd[@]}"); } >"$log" 2>&1; then
		say "$name: build FAILED after $((SECONDS - start))s; last lines of $log:"
		tail -n 40 "$log" >&2
		rm -f "$bindir/.$name.tmp"
		die "building $name failed (full log: $log)"
	fi
	mv -f "$bindir/.$name.tmp" "$bindir/$name"
	say "$name: built in $((SECONDS - start))s ($(du -h "$bindir/$name" | cut -f1))"
}

total_start=$SECONDS

# etcd first: it is the smaller build, and its version is compiled in.
build etcd "$here/etcd" go.etcd.io/etcd/server/v3 -ldflags "-s -w"

# Same -X stamps as kubernetes' hack/lib/version.sh, so /version and
# `kube-apiserver --version` report the pinned release.
k8s_minor=${k8s_version#v*.}
k8s_minor=${k8s_minor%%.*}
k8s_major=${k8s_version#v}
k8s_major=${k8s_major%%.*}
build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
ldflags="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ldflags+=" -X $p.gitVersion=$k8s_version -X $p.gitMajor=$k8s_major -X $p.gitMinor=$k8s_minor"
	ldflags+=" -X $p.gitTreeState=clean -X $p.gitCommit= -X $p.buildDate=$build_date"
done
build kube-apiserver "$here/apiserver" k8s.io/kubernetes/cmd/kube-apiserver -ldflags "$ldflags"
[[ -z $want_kubectl ]] || build kubectl "$here/apiserver" k8s.io/kubernetes/cmd/kubectl -ldflags "$ldflags"

up_to_date || die "binaries missing after build in $bindir"
point_current
say "done in $((SECONDS - total_start))s: $bindir"
echo "$bindir"
