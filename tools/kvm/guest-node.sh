#!/bin/sh
# Makes a guest a lab node, as tests/src/lab/topology.rs does for a
# namespace: underlay address on eth0, routing on, a cni0 bridge and pods
# (network namespaces on veths), host-gw routes to the other nodes' pods.
#   guest-node.sh N UNDERLAY_V4/PREFIX PODS [OTHER_N:OTHER_V4 ...]
set -eu
n=$1 addr=$2 pods=$3
shift 3
ip addr add "$addr" dev eth0
ip link set eth0 up
sysctl -q -w net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 \
  net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.default.rp_filter=2
ip link add cni0 type bridge
ip addr add "10.244.$n.1/24" dev cni0
ip addr add "fd00:244:$n::1/64" dev cni0 nodad
ip link set cni0 up
p=2
while [ "$p" -le $((pods + 1)) ]; do
  ns=pod-$n-$p
  ip netns add "$ns"
  ip link add "veth$n$p" type veth peer name eth0 netns "$ns"
  ip link set "veth$n$p" master cni0 up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "10.244.$n.$p/24" dev eth0
  ip -n "$ns" addr add "fd00:244:$n::$p/64" dev eth0 nodad
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route add default via "10.244.$n.1"
  ip -n "$ns" -6 route add default via "fd00:244:$n::1"
  p=$((p + 1))
done
for other in "$@"; do
  ip route add "10.244.${other%%:*}.0/24" via "${other#*:}"
done
