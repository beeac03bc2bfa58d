#!/bin/sh
# PID 1 of a vpblu test guest (installed as /sbin/vpblu-init by image.sh).
# Mounts what the daemon needs, the host's read-only share of binaries at
# /host and this guest's own read-write share at /vpblu, then runs
# /vpblu/guest.sh (written by the harness) and powers off when it returns.
# Kernel command line: vpblu.name=NAME.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t bpf bpf /sys/fs/bpf
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
for arg in $(cat /proc/cmdline); do
  case $arg in vpblu.name=*) hostname "${arg#vpblu.name=}" ;; esac
done
ip link set lo up
modprobe 9pnet_virtio && modprobe 9p
modprobe tun
# No udev here: load the NIC driver ourselves.
modprobe virtio_net
mount -t 9p -o trans=virtio,version=9p2000.L,ro host /host
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 run /vpblu
echo "vpblu-init: ready after $(cut -d' ' -f1 /proc/uptime) s"
if [ -f /vpblu/guest.sh ]; then
  sh /vpblu/guest.sh >/vpblu/guest.log 2>&1
  echo "vpblu-init: guest.sh exited $?"
else
  echo "vpblu-init: no /vpblu/guest.sh"
fi
sync
echo o >/proc/sysrq-trigger
sleep 10
