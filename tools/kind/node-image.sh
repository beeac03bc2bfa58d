#!/usr/bin/env bash
# Builds vpblu's kind node image and the images kubeadm, Flannel and the
# e2e run need, with nothing pulled from a registry:
#
#   tools/kind/node-image.sh        prints the node image reference (last line)
#
# - Debian root filesystems by debootstrap (cached by package list):
#   "node" (systemd, containerd 1.6, runc, iptables/nftables, CNI plugins)
#   and "tools" (iproute2, iptables, iperf3, tcpdump, ping, conntrack...).
# - The programs from tools/kind/build.sh (Kubernetes, etcd, CoreDNS,
#   Flannel, kind, pause), each put in an image under the name kubeadm
#   1.37 asks for: registry.k8s.io/kube-{apiserver,controller-manager,
#   scheduler,proxy}:vK8S, etcd:ETCD-0, coredns/coredns:vCOREDNS,
#   pause:3.10.2; Flannel as vpblu.dev/flannel:vX, the e2e tools image as
#   vpblu.dev/e2e-tools:KEY.
# - Those images are imported, unpacked, into the node's containerd
#   (/var/lib/containerd in the rootfs) by the host's containerd, so kubeadm
#   and the kubelet find them without pulling.
# - The rootfs becomes the node image in the private engine (engine.sh).
#
# Everything is keyed by the inputs (binary pins, package lists, this
# script, tools/kind/node/*): a second run is a no-op printing the same
# reference. Environment: VPBLU_KIND_DIR (cache root), DOCKER_HOST (default:
# the private engine's socket).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${VPBLU_KIND_DIR:-$HOME/.cache/vpblu/kind}
say() { printf 'kind node image: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

[[ $(id -u) == 0 ]] || die "building the root filesystems needs root (debootstrap, mounts); run as root"
"$here/deps.sh"
export DOCKER_HOST=${DOCKER_HOST:-$("$here/engine.sh" up)}
docker=/usr/bin/docker
[[ -x $docker ]] || docker=docker
export DOCKER_BUILDKIT=0

readonly PAUSE_VERSION=3.10.2
readonly MIRROR=http://deb.debian.org/debian
readonly SUITE=bookworm
node_packages=systemd,systemd-sysv,dbus,containerd,runc,iptables,nftables,conntrack,ethtool,socat,iproute2,kmod,util-linux,mount,ca-certificates,containernetworking-plugins,procps,libseccomp2,jq,iputils-ping
tools_packages=iproute2,iptables,nftables,conntrack,iputils-ping,iperf3,tcpdump,procps,ca-certificates,kmod,util-linux

# debootstrap_cached NAME PACKAGES: a minbase rootfs, built once per list.
debootstrap_cached() {
	local name=$1 packages=$2 dir
	dir=$cache/rootfs/$name-$(printf '%s %s %s' "$SUITE" "$MIRROR" "$packages" | sha256sum | cut -c1-12)
	if [[ ! -f $dir.done ]]; then
		say "debootstrap $name ($SUITE, ${packages//,/ }); log $dir.log"
		rm -rf "$dir"
		mkdir -p "$cache/rootfs"
		debootstrap --variant=minbase --include="$packages" "$SUITE" "$dir" "$MIRROR" >"$dir.log" 2>&1 ||
			{ tail -20 "$dir.log" >&2; die "debootstrap of $name failed (log $dir.log)"; }
		chroot "$dir" apt-get clean
		rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin
		touch "$dir.done"
	fi
	echo "$dir"
}

node_base=$(debootstrap_cached node "$node_packages")
tools_base=$(debootstrap_cached tools "$tools_packages")
bin=$("$here/build.sh" | tail -1)
# shellcheck source=/dev/null
source "$bin/versions.env"

key=$( { echo "$node_base $tools_base $bin $PAUSE_VERSION"; cat "$0" "$here"/node/*; } | sha256sum | cut -c1-12)
node_image=vpblu.dev/kind-node:$k8s_version-$key
tools_image=vpblu.dev/e2e-tools:$key
if $docker image inspect "$node_image" >/dev/null 2>&1; then
	say "up to date ($node_image)"
	echo "$node_image"
	exit 0
fi

work=$(mktemp -d "$cache/work.XXXXXX")
containerd_pid=
cleanup() {
	[[ -z $containerd_pid ]] || { kill "$containerd_pid" 2>/dev/null; wait "$containerd_pid" 2>/dev/null || true; }
	rm -rf "$work"
}
trap cleanup EXIT

# image_from_dir REF BASE DIR [DOCKERFILE-LINES...]: BASE with DIR's
# contents copied over its root; REF is added to the images to preload.
image_from_dir() {
	local ref=$1 base=$2 dir=$3
	shift 3
	{ echo "FROM $base"; echo "COPY . /"; printf '%s\n' "$@"; } >"$dir.Dockerfile"
	$docker build -q -f "$dir.Dockerfile" -t "$ref" "$dir" >/dev/null ||
		die "docker build of $ref from $dir failed"
	images+=("$ref")
}

# A distroless-like filesystem: a root user, CA certificates, /tmp.
minimal_rootfs() {
	local dir=$1
	mkdir -p "$dir/etc/ssl/certs" "$dir/tmp" "$dir/usr/local/bin"
	chmod 1777 "$dir/tmp"
	printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' >"$dir/etc/passwd"
	printf 'root:x:0:\nnogroup:x:65534:\n' >"$dir/etc/group"
	cp /etc/ssl/certs/ca-certificates.crt "$dir/etc/ssl/certs/"
}

say "building the component images"
images=()
for p in kube-apiserver kube-controller-manager kube-scheduler etcd; do
	minimal_rootfs "$work/$p"
	cp "$bin/$p" "$work/$p/usr/local/bin/"
	case $p in
	etcd) ref=registry.k8s.io/etcd:${etcd_version#v}-0 ;;
	*) ref=registry.k8s.io/$p:$k8s_version ;;
	esac
	image_from_dir "$ref" scratch "$work/$p" 'ENV PATH=/usr/local/bin:/usr/bin:/bin'
done
minimal_rootfs "$work/coredns"
cp "$bin/coredns" "$work/coredns/coredns"
image_from_dir "registry.k8s.io/coredns/coredns:$coredns_version" scratch "$work/coredns" 'ENTRYPOINT ["/coredns"]'
mkdir -p "$work/pause"
cp "$bin/pause" "$work/pause/pause"
image_from_dir "registry.k8s.io/pause:$PAUSE_VERSION" scratch "$work/pause" 'ENTRYPOINT ["/pause"]'

# The Debian-based ones: kube-proxy (iptables), Flannel, and the e2e tools.
tar -C "$tools_base" -c . | $docker import - "$tools_image" >/dev/null
images+=("$tools_image")
mkdir -p "$work/kube-proxy/usr/local/bin" "$work/flannel/opt/bin"
cp "$bin/kube-proxy" "$work/kube-proxy/usr/local/bin/"
image_from_dir "registry.k8s.io/kube-proxy:$k8s_version" "$tools_image" "$work/kube-proxy"
cp "$bin/flanneld" "$bin/flannel" "$work/flannel/opt/bin/"
image_from_dir "vpblu.dev/flannel:$flannel_version" "$tools_image" "$work/flannel" 'ENTRYPOINT ["/opt/bin/flanneld"]'

say "assembling the node root filesystem"
rootfs=$work/node
cp -a "$node_base" "$rootfs"
install -m 0755 "$bin/kubeadm" "$bin/kubelet" "$bin/kubectl" "$rootfs/usr/bin/"
install -m 0755 "$here/node/entrypoint" "$rootfs/usr/local/bin/entrypoint"
install -m 0755 "$here/node/runc" "$rootfs/usr/local/bin/vpblu-node-runc"
mkdir -p "$rootfs/opt/cni/bin" "$rootfs/etc/cni/net.d" "$rootfs/kind" "$rootfs/etc/containerd" \
	"$rootfs/etc/systemd/system/kubelet.service.d" "$rootfs/var/lib/kubelet" "$rootfs/etc/kubernetes/manifests"
cp -a "$rootfs"/usr/lib/cni/. "$rootfs/opt/cni/bin/"
echo "$k8s_version" >"$rootfs/kind/version"
sed "s/PAUSE_VERSION/$PAUSE_VERSION/" "$here/node/containerd.toml" >"$rootfs/etc/containerd/config.toml"
install -m 0644 "$here/node/kubelet.service" "$rootfs/etc/systemd/system/kubelet.service"
install -m 0644 "$here/node/10-kubeadm.conf" "$rootfs/etc/systemd/system/kubelet.service.d/10-kubeadm.conf"
ln -sf /etc/systemd/system/kubelet.service "$rootfs/etc/systemd/system/multi-user.target.wants/kubelet.service"
ln -sf /lib/systemd/system/containerd.service "$rootfs/etc/systemd/system/multi-user.target.wants/containerd.service"
# Nothing a container needs: consoles, timers, udev, the journal on disk.
for unit in getty.target console-getty.service systemd-udevd.service systemd-udev-trigger.service \
	systemd-remount-fs.service systemd-modules-load.service apt-daily.timer apt-daily-upgrade.timer \
	dpkg-db-backup.timer e2scrub_all.timer fstrim.timer systemd-tmpfiles-clean.timer; do
	ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
done
echo 'ReadKMsg=no' >>"$rootfs/etc/systemd/journald.conf"
rm -f "$rootfs/etc/machine-id"
: >"$rootfs/etc/machine-id"

say "preloading ${#images[@]} images into the node's containerd"
mkdir -p "$work/images"
for ref in "${images[@]}"; do
	$docker save "$ref" >"$work/images/${ref//[\/:]/_}.tar"
done
cat >"$work/containerd.toml" <<TOML
version = 2
root = "$rootfs/var/lib/containerd"
state = "$work/containerd-state"
[grpc]
  address = "$work/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
TOML
containerd --config "$work/containerd.toml" >"$work/containerd.log" 2>&1 &
containerd_pid=$!
for _ in $(seq 100); do [[ -S $work/containerd.sock ]] && break; sleep 0.1; done
[[ -S $work/containerd.sock ]] || { tail "$work/containerd.log" >&2; die "the preloading containerd did not start"; }
for tarball in "$work"/images/*.tar; do
	ctr -a "$work/containerd.sock" -n k8s.io images import --snapshotter overlayfs "$tarball" >/dev/null ||
		die "ctr import of $tarball failed"
done
kill "$containerd_pid"
wait "$containerd_pid" 2>/dev/null || true
containerd_pid=
rm -rf "$rootfs/var/lib/containerd/tmpmounts" "$work/images"

say "importing the node image"
tar -C "$rootfs" --numeric-owner --xattrs -c . | $docker import - "$node_image-base" >/dev/null
printf '%s\n' "FROM $node_image-base" 'ENV container=docker' 'STOPSIGNAL SIGRTMIN+3' \
	'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' >"$work/node.Dockerfile"
mkdir "$work/empty"
$docker build -q -f "$work/node.Dockerfile" -t "$node_image" "$work/empty" >/dev/null
$docker rmi "$node_image-base" >/dev/null 2>&1 || true
# Earlier node and tools images are of no further use (kind runs by tag).
for old in $($docker images --format '{{.Repository}}:{{.Tag}}' vpblu.dev/kind-node) \
	$($docker images --format '{{.Repository}}:{{.Tag}}' vpblu.dev/e2e-tools); do
	[[ $old == "$node_image" || $old == "$tools_image" ]] || $docker rmi "$old" >/dev/null 2>&1 || true
done
say "built $node_image"
echo "$node_image"
