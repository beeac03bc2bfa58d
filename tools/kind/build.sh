#!/usr/bin/env bash
# Builds every program the offline kind cluster needs, from the Go module
# proxy and from this tree, into a cache outside the clone:
#
#   ${VPBLU_KIND_DIR:-$HOME/.cache/vpblu/kind}/bin/<key>/bin/...
#   ${VPBLU_KIND_DIR:-$HOME/.cache/vpblu/kind}/bin/current -> <key>/bin
#
#   kind                          sigs.k8s.io/kind            (kind/go.mod)
#   kubeadm kubelet kubectl       k8s.io/kubernetes           (k8s/go.mod)
#   kube-apiserver kube-controller-manager kube-scheduler kube-proxy
#   etcd                          the testbed's etcd          (../testbed/etcd)
#   coredns                       github.com/coredns/coredns  (coredns/go.mod)
#   flanneld                      github.com/flannel-io/flannel (flannel/go.mod)
#   flannel                       the flannel CNI plugin      (cni/go.mod)
#   pause                         images/pause.c, static
#
# <key> is derived from the pins and this recipe, so nothing is rebuilt until
# they change. Progress goes to stderr; the last line on stdout is the bin
# directory:   dir=$(tools/kind/build.sh | tail -1)
#
# Flannel is pinned at v0.17.0: every later release imports Tencent Cloud's
# split SDK modules (tencentcloud/vpc), which the module proxy does not
# serve; v0.17.0 uses the single tencentcloud-sdk-go module, which it does.
# Its udp backend is cgo, so flanneld links glibc (it runs in the Debian
# tools image). The flannel CNI plugin left containernetworking/plugins
# after v0.9.1 for a repository the proxy does not serve; v0.9.1's works.
#
# Environment: VPBLU_KIND_DIR (cache root), GO (go binary).
set -euo pipefail

# Bump when the build recipe (flags, layout) changes, to force a rebuild.
readonly RECIPE=1

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOOL=kind-build
root=${VPBLU_KIND_DIR:-$HOME/.cache/vpblu/kind}/bin
pin_files=()
for m in k8s kind coredns flannel cni ../testbed/etcd; do
	pin_files+=("$here/$m/go.mod" "$here/$m/go.sum")
done
pin_files+=("$here/images/pause.c")

pinned() { awk -v m="$2" '$1 == m && $2 ~ /^v/ { print $2; exit }' "$1"; }
k8s_version=$(pinned "$here/k8s/go.mod" k8s.io/kubernetes)
kind_version=$(pinned "$here/kind/go.mod" sigs.k8s.io/kind)
coredns_version=$(pinned "$here/coredns/go.mod" github.com/coredns/coredns)
flannel_version=$(pinned "$here/flannel/go.mod" github.com/flannel-io/flannel)
etcd_version=$(pinned "$here/../testbed/etcd/go.mod" go.etcd.io/etcd/server/v3)
for v in k8s_version kind_version coredns_version flannel_version etcd_version; do
	[[ -n ${!v} ]] || { echo "kind-build: error: no ${v%_version} requirement in $here/*/go.mod" >&2; exit 1; }
done
label="k8s-$k8s_version-kind-$kind_version"

programs=(kind kubeadm kubelet kubectl kube-apiserver kube-controller-manager kube-scheduler kube-proxy
	etcd coredns flanneld flannel pause)
up_to_date() {
	local p
	for p in "${programs[@]}"; do [[ -x $bindir/$p ]] || return 1; done
	[[ -f $bindir/versions.env ]]
}

# shellcheck source=tools/go-cached-build.sh
source "$here/../go-cached-build.sh"
cache_fast_path
cache_lock
go_toolchain
total_start=$SECONDS

command -v gcc >/dev/null || die "gcc is missing (it builds the pause program and flanneld's cgo part): apt-get install gcc"

go_build kind "$here/kind" sigs.k8s.io/kind -ldflags "-s -w"
ldflags=$(k8s_ldflags "$k8s_version")
# The small ones first; kubelet and the control plane share most packages.
for p in kubeadm kubectl kubelet kube-proxy kube-scheduler kube-controller-manager kube-apiserver; do
	go_build "$p" "$here/k8s" "k8s.io/kubernetes/cmd/$p" -ldflags "$ldflags"
done
go_build etcd "$here/../testbed/etcd" go.etcd.io/etcd/server/v3 -ldflags "-s -w"
go_build coredns "$here/coredns" github.com/coredns/coredns \
	-ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$coredns_version"
CGO_ENABLED=1 go_build flanneld "$here/flannel" github.com/flannel-io/flannel \
	-ldflags "-s -w -X github.com/flannel-io/flannel/version.Version=$flannel_version"
go_build flannel "$here/cni" github.com/containernetworking/plugins/plugins/meta/flannel -ldflags "-s -w"

if [[ ! -x $bindir/pause ]]; then
	gcc -Os -static -Wall -Werror -o "$bindir/.pause.tmp" "$here/images/pause.c" ||
		die "building pause from $here/images/pause.c failed (needs a static libc: apt-get install libc6-dev)"
	strip "$bindir/.pause.tmp"
	mv -f "$bindir/.pause.tmp" "$bindir/pause"
fi

# What the node image script tags the images with.
cat >"$bindir/versions.env" <<VERSIONS
k8s_version=$k8s_version
kind_version=$kind_version
coredns_version=$coredns_version
flannel_version=$flannel_version
etcd_version=$etcd_version
VERSIONS

say "done in $((SECONDS - total_start))s"
cache_done
