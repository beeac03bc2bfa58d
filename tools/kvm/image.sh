#!/usr/bin/env bash
# Build the guest that proves vpblu's kernel WireGuard backend: a Debian
# bookworm root (its linux-image-amd64 ships wireguard.ko), cached outside
# the clone and keyed by the package versions and this recipe:
#
#   ${VPBLU_KVM_DIR:-$HOME/.cache/vpblu/kvm}/<key>/{vmlinux,initrd.gz,root.ext4,versions}
#   ${VPBLU_KVM_DIR:-$HOME/.cache/vpblu/kvm}/current -> <key>
#
# vmlinux is the uncompressed kernel (QEMU boots it through its PVH entry,
# far faster under TCG than decompressing a bzImage); initrd.gz is a busybox
# that loads virtio and ext4 and switch_roots into root.ext4, whose
# /sbin/vpblu-init mounts the host's 9p shares and runs the share's
# guest.sh. The last (only) line on stdout is the image directory.
#
# Environment: VPBLU_KVM_DIR (cache root), VPBLU_KVM_MIRROR (Debian mirror).
set -euo pipefail
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# Bump when the recipe (packages, init, layout) changes, to force a rebuild.
readonly RECIPE=1
readonly SUITE=bookworm
readonly PACKAGES=linux-image-amd64,iproute2,wireguard-tools,kmod,iputils-ping,tcpdump,procps,nftables,iperf3
mirror=${VPBLU_KVM_MIRROR:-http://deb.debian.org/debian}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=${VPBLU_KVM_DIR:-$HOME/.cache/vpblu/kvm}

die() { echo "kvm/image: error: $*" >&2; exit 1; }
need() { # need COMMAND DEBIAN-PACKAGE
  command -v "$1" >/dev/null 2>&1 || die "$1 is missing; install it with: apt-get install $2"
}
need debootstrap debootstrap
need mkfs.ext4 e2fsprogs
need cpio cpio
need apt-cache apt
# grep reads all of its input (no -q): with pipefail, a grep that quits at
# the first match can SIGPIPE the writer and fail the pipeline at random.
[[ -x /bin/busybox ]] && /bin/busybox --list | grep -x switch_root >/dev/null ||
  die "a static busybox is missing; install it with: apt-get install busybox-static"
file -L /bin/busybox 2>/dev/null | grep 'statically linked' >/dev/null ||
  die "/bin/busybox is not static; install it with: apt-get install busybox-static"

# The key: the recipe, this script and the candidate versions of the
# packages that decide the guest's kernel and tools (the host is bookworm,
# so its apt lists name the versions debootstrap will fetch).
host_suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
[[ $host_suite == "$SUITE" ]] ||
  die "the host is '$host_suite', not $SUITE: the image key reads package versions from the host's apt lists"
versions=$(apt-cache policy linux-image-amd64 wireguard-tools iproute2 busybox-static 2>/dev/null |
  awk '/^[^ ]/ { p = $1 } /Candidate:/ { print p, $2 }')
[[ $(wc -l <<<"$versions") -eq 4 ]] || die "apt-cache knows no candidate for every guest package; run: apt-get update"
key=$( { echo "recipe=$RECIPE suite=$SUITE packages=$PACKAGES"; echo "$versions"; cat "${BASH_SOURCE[0]}" "$here/guest-init.sh"; } |
  sha256sum | cut -c1-16)
dir=$root/$key

if [[ -f $dir/done ]]; then
  ln -sfn "$key" "$root/current"
  echo "$dir"
  exit 0
fi

[[ $(id -u) -eq 0 ]] || die "building the guest image needs root (debootstrap, chroot)"
mkdir -p "$root"
exec 9>"$root/.lock"
flock 9
if [[ -f $dir/done ]]; then ln -sfn "$key" "$root/current"; echo "$dir"; exit 0; fi

work=$(mktemp -d "$root/.build-$key.XXXXXX")
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
start=$SECONDS

# debootstrap is the slow part (minutes): its result is kept, keyed by the
# packages alone, so a failure in a later step does not repeat it.
base_key=$( { echo "suite=$SUITE packages=$PACKAGES"; echo "$versions"; } | sha256sum | cut -c1-16)
base=$root/.debootstrap-$base_key
if [[ ! -f $base/.complete ]]; then
  rm -rf "$base"
  echo "kvm/image: debootstrap $SUITE ($PACKAGES) into $base" >&2
  nice -n 10 debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$base" "$mirror" \
    >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
  touch "$base/.complete"
fi
cp -a "$base" "$work/rootfs"
rm -f "$work/rootfs/.complete"

rootfs=$work/rootfs
kver=$(ls "$rootfs/lib/modules")
[[ $(wc -w <<<"$kver") -eq 1 ]] || die "expected one kernel in the guest, found: $kver"
[[ -f $rootfs/lib/modules/$kver/kernel/drivers/net/wireguard/wireguard.ko ]] ||
  die "linux-image $kver has no wireguard.ko"

# The uncompressed kernel: find the compressed payload inside vmlinuz and
# keep the first candidate that decompresses to an ELF (what the kernel's
# scripts/extract-vmlinux does).
extract_vmlinux() { # extract_vmlinux VMLINUZ OUT
  local magic tool off
  for pair in '1f8b08:gunzip' 'fd377a585a00:unxz' '28b52ffd:unzstd' '5d000000:unlzma'; do
    magic=${pair%%:*} tool=${pair#*:}
    command -v "$tool" >/dev/null || continue
    for off in $(od -An -v -tx1 -w1 "$1" | tr -d ' \n' | grep -bo "$magic" | cut -d: -f1 | head -5); do
      (( off % 2 == 0 )) || continue
      tail -c +$((off / 2 + 1)) "$1" | "$tool" -c 2>/dev/null >"$2" || true
      if [[ $(head -c4 "$2" | od -An -tx1 | tr -d ' ') == 7f454c46 ]]; then return 0; fi
    done
  done
  return 1
}
extract_vmlinux "$rootfs/boot/vmlinuz-$kver" "$work/vmlinux" || die "no ELF kernel found inside vmlinuz-$kver"

# The initrd: busybox plus exactly the modules (and their dependencies, in
# order) that reach an ext4 root on virtio-blk.
initrd=$work/initrd
mkdir -p "$initrd"/{bin,dev,proc,sys,newroot,modules}
cp /bin/busybox "$initrd/bin/busybox"
: >"$initrd/modules/order"
for m in virtio_pci virtio_blk ext4; do
  chroot "$rootfs" modprobe -S "$kver" --show-depends "$m" | awk '$1 == "insmod" { print $2 }' | while read -r ko; do
    base=$(basename "$ko")
    grep -qx "$base" "$initrd/modules/order" && continue
    cp "$rootfs$ko" "$initrd/modules/$base"
    echo "$base" >>"$initrd/modules/order"
  done
done
cat >"$initrd/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox mkdir -p /bin
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
cd /modules
for m in $(cat order); do
  case $m in *.xz) unxz -c "$m" >/tmp.ko && m=/tmp.ko ;; esac
  insmod "$m" 2>/dev/null
done
cd /
for i in $(seq 1 100); do [ -b /dev/vda ] && break; sleep 0.05; done
mount -t ext4 -o rw /dev/vda /newroot || { echo "initrd: cannot mount /dev/vda"; exec sh; }
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/vpblu-init
EOF
chmod +x "$initrd/init"
(cd "$initrd" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/initrd.gz"

# The root: our init, no password prompts, nothing that starts services.
install -m 0755 "$here/guest-init.sh" "$rootfs/sbin/vpblu-init"
mkdir -p "$rootfs"/{host,vpblu,sys/fs/bpf}
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs/boot"/initrd.img-*
size_mb=$(( $(du -sm "$rootfs" | cut -f1) + 384 ))
mkfs.ext4 -q -F -L vpblu-guest -d "$rootfs" "$work/root.ext4" "${size_mb}M" ||
  die "mkfs.ext4 -d failed"

mkdir -p "$dir"
mv "$work/vmlinux" "$work/initrd.gz" "$work/root.ext4" "$dir/"
{ echo "kernel $kver"; echo "$versions"; } >"$dir/versions"
touch "$dir/done"
ln -sfn "$key" "$root/current"
# Earlier images (other keys) are 1 GB each: keep only this one.
find "$root" -mindepth 1 -maxdepth 1 -type d -regextype posix-extended -regex '.*/[0-9a-f]{16}' ! -name "$key" -exec rm -rf {} +
echo "kvm/image: built $dir in $((SECONDS - start)) s" >&2
echo "$dir"
