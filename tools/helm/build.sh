#!/usr/bin/env bash
# Build helm from the Go module proxy, pinned by tools/helm/go.{mod,sum},
# into a cache outside the clone:
#
#   ${VPBLU_HELM_DIR:-$HOME/.cache/vpblu/helm}/<key>/bin/helm
#   ${VPBLU_HELM_DIR:-$HOME/.cache/vpblu/helm}/current -> <key>/bin
#
# <key> is derived from the pins, so helm is rebuilt only when they change.
# Progress goes to stderr; the last (only) line on stdout is the bin
# directory:   dir=$(tools/helm/build.sh | tail -1)
#
# Environment: VPBLU_HELM_DIR (cache root), GO (go binary; default: go on
# PATH, else /usr/local/go/bin/go).
set -euo pipefail

# Bump when the build recipe (flags, layout) changes, to force a rebuild.
readonly RECIPE=1
readonly MODULE=helm.sh/helm/v3

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOOL=helm
root=${VPBLU_HELM_DIR:-$HOME/.cache/vpblu/helm}
pin_files=("$here/go.mod" "$here/go.sum")

# The version a module requires, read from go.mod (no go command, no network).
pinned() { awk -v m="$1" '$1 == m && $2 ~ /^v/ { print $2; exit }' "$here/go.mod"; }

version=$(pinned "$MODULE")
client_go=$(pinned k8s.io/client-go)
[[ -n $version && -n $client_go ]] || {
	echo "helm: error: no $MODULE or k8s.io/client-go requirement in $here/go.mod" >&2
	exit 1
}
label=$version

up_to_date() { [[ -x $bindir/helm ]]; }

# shellcheck source=tools/go-cached-build.sh
source "$here/../go-cached-build.sh"
cache_fast_path
cache_lock
go_toolchain

# The stamps helm's own Makefile sets: its version, and the Kubernetes
# version `helm template` and `helm lint` assume without a cluster (client-go
# v0.X.Y is Kubernetes 1.X).
k8s_minor=${client_go#v0.}
k8s_minor=${k8s_minor%%.*}
ldflags="-s -w -X $MODULE/internal/version.version=$version -X $MODULE/internal/version.gitTreeState=clean"
for p in pkg/lint/rules pkg/chartutil; do
	ldflags+=" -X $MODULE/$p.k8sVersionMajor=1 -X $MODULE/$p.k8sVersionMinor=$k8s_minor"
done
go_build helm "$here" "$MODULE/cmd/helm" -ldflags "$ldflags"
"$bindir/helm" version --short >>"$keydir/logs/helm.log" 2>&1 ||
	die "the built binary does not run (see $keydir/logs/helm.log)"
say "$("$bindir/helm" version --short)"
cache_done
