#!/bin/sh
# Starts /host/vpblu-daemon in the guest, detached, logging to the share;
# its PID goes to /run/vpblu-daemon.pid. Each start begins a fresh log.
#   guest-daemon.sh NODE_NAME CONTROLLER_URLS SERVER_NAME BACKEND
set -eu
mkdir -p /var/lib/vpblu
RUST_LOG=info setsid /host/vpblu-daemon \
  --node-name "$1" --controller-addr "$2" --controller-server-name "$3" \
  --ca-file /vpblu/ca.crt --token-file /vpblu/token \
  --key-dir /var/lib/vpblu/keys --state-dir /var/lib/vpblu/state \
  --bpffs /sys/fs/bpf/vpblu --interface wg-mesh --lane-interface wg-lane \
  --backend "$4" --wireguard-go /vpblu/wireguard-go --metrics-addr 0.0.0.0:9091 --observe-interval 1s --log-format text \
  </dev/null >/vpblu/daemon.log 2>&1 &
echo $! >/run/vpblu-daemon.pid
