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
TOOL=testbed
root=${VPBLU_TESTBED_DIR:-$HOME/.cache/vpblu/testbed}
pin_files=("$here/apiserver/go.mod" "$here/apiserver/go.sum" "$here/etcd/go.mod" "$here/etcd/go.sum")

# The version a module requires, read from go.mod (no go command, no network).
pinned() { awk -v m="$2" '$1 == m && $2 ~ /^v/ { print $2; exit }' "$1"; }

k8s_version=$(pinned "$here/apiserver/go.mod" k8s.io/kubernetes)
etcd_version=$(pinned "$here/etcd/go.mod" go.etcd.io/etcd/server/v3)
[[ -n $k8s_version && -n $etcd_version ]] || {
	echo "testbed: error: no k8s.io/kubernetes or etcd server requirement in $here/*/go.mod" >&2
	exit 1
}
label="k8s-$k8s_version-etcd-$etcd_version"

up_to_date() { [[ -x $bindir/kube-apiserver && -x $bindir/etcd && ( -z $want_kubectl || -x $bindir/kubectl ) ]]; }

# shellcheck source=tools/go-cached-build.sh
source "$here/../go-cached-build.sh"
cache_fast_path
cache_lock
go_toolchain

total_start=$SECONDS

# etcd first: it is the smaller build, and its version is compiled in.
go_build etcd "$here/etcd" go.etcd.io/etcd/server/v3 -ldflags "-s -w"

ldflags=$(k8s_ldflags "$k8s_version")
go_build kube-apiserver "$here/apiserver" k8s.io/kubernetes/cmd/kube-apiserver -ldflags "$ldflags"
[[ -z $want_kubectl ]] || go_build kubectl "$here/apiserver" k8s.io/kubernetes/cmd/kubectl -ldflags "$ldflags"

say "done in $((SECONDS - total_start))s"
cache_done
