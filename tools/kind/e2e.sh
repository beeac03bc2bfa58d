#!/usr/bin/env bash
# The §12 acceptance checks on a real 3-node kind cluster:
#
#   tools/kind/e2e.sh            create the cluster, build (make images) and load the images,
#                                deploy k8s/deploy, run the checks
#   tools/kind/e2e.sh --keep     leave the cluster up afterwards
#   KIND_CLUSTER=name            cluster name (default vpblu-e2e)
#
# Needs docker (or podman via KIND_EXPERIMENTAL_PROVIDER), kind, kubectl,
# openssl and cargo (to build the capture classifier shared with the lab).
# It cannot run on the project's CI machines, which have no container
# engine: there the lab (`make lab`, tests/tests/acceptance_*.rs) runs the
# same checks on network namespaces. The capture classification is the
# lab's own code (`vpblu-lab classify`), so both runs judge a capture the
# same way.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cluster=${KIND_CLUSTER:-vpblu-e2e}
keep=false
[[ ${1:-} == --keep ]] && keep=true

log() { printf '\n== %s\n' "$*"; }
die() { printf 'kind e2e: %s\n' "$*" >&2; exit 1; }

for tool in docker kind kubectl openssl cargo; do
  command -v "$tool" >/dev/null || die "$tool is not on PATH; install it (this script needs a container engine and kind)"
done
docker info >/dev/null 2>&1 || die "docker cannot reach a container engine (docker info failed); start one first"

kc() { kubectl --context "kind-$cluster" "$@"; }

cleanup() {
  if [[ $keep == false ]]; then
    log "deleting kind cluster $cluster"
    kind delete cluster --name "$cluster" || true
  else
    log "cluster $cluster left up (kubectl --context kind-$cluster ...)"
  fi
}
trap cleanup EXIT

log "creating kind cluster $cluster"
kind create cluster --name "$cluster" --config "$here/cluster.yaml" --wait 120s

# `make images` is the one way images are made (tools/images/build.sh: no
# registry, no engine); its archives carry :TAG and :latest, and k8s/deploy
# runs :latest. (The kind issue moves this script to `helm install`.)
log "building images"
make -C "$root" images
images="${CARGO_TARGET_DIR:-$HOME/.cache/vpblu/target}/images"
tag=$(git -C "$root" describe --tags --always --dirty)
for image in vpblu-controller vpblu-daemon; do
  kind load image-archive --name "$cluster" "$images/$image-$tag.tar"
done

log "building the capture classifier"
cargo build --locked -q -p vpblu-e2e --bin vpblu-lab
classify="${CARGO_TARGET_DIR:-$root/target}/debug/vpblu-lab"

log "issuing the stream's TLS certificate"
tls=$(mktemp -d)
trap 'rm -rf "$tls"; cleanup' EXIT
"$here/stream-certs.sh" "$tls"
kc apply -f "$root/k8s/deploy/namespace.yaml"
kc -n vpblu-system create secret tls vpblu-controller-tls --cert "$tls/server.crt" --key "$tls/server.key" \
  --dry-run=client -o yaml | kc apply -f -
kc -n vpblu-system create configmap vpblu-controller-ca --from-file=ca.crt="$tls/ca.crt" \
  --dry-run=client -o yaml | kc apply -f -

log "deploying vpblu"
kc apply -f "$root/k8s/crds/"
kc apply -k "$root/k8s/deploy"
kc -n vpblu-system rollout status deployment/vpblu-controller --timeout=180s
kc -n vpblu-system rollout status daemonset/vpblu-daemon --timeout=180s
kc apply -f "$root/k8s/deploy/samples/tunnelpolicy-fullmesh.yaml"
kc apply -f "$here/probe-pods.yaml"
kc -n vpblu-e2e rollout status daemonset/probe --timeout=180s
kc -n vpblu-e2e rollout status daemonset/capture --timeout=180s

nodes=$(kc get nodes -o jsonpath='{.items[*].metadata.name}')
node_count=$(wc -w <<<"$nodes")
probe_on() { kc -n vpblu-e2e get pods -l app=probe --field-selector "spec.nodeName=$1" -o jsonpath='{.items[0].metadata.name}'; }
capture_on() { kc -n vpblu-e2e get pods -l app=capture --field-selector "spec.nodeName=$1" -o jsonpath='{.items[0].metadata.name}'; }
ip_of() { kc -n vpblu-e2e get pod "$1" -o jsonpath='{.status.podIP}'; }

log "§12.2 FullMesh: every node has every other node as a peer, with handshakes"
deadline=$((SECONDS + 120))
until (( SECONDS > deadline )); do
  ok=0
  for node in $nodes; do
    peers=$(kc get vpblunode "$node" -o jsonpath='{.status.peersUp}' 2>/dev/null || true)
    [[ ${peers:-0} -ge $((node_count - 1)) ]] && ok=$((ok + 1))
  done
  (( ok == node_count )) && break
  sleep 2
done
(( ok == node_count )) || { kc get vpblunodes -o yaml; die "only $ok of $node_count nodes report all peers up"; }
echo "all $node_count nodes have $((node_count - 1)) peers up"

read -r -a node_list <<<"$nodes"
a=${node_list[1]}
b=${node_list[2]}
pa=$(probe_on "$a")
pb=$(probe_on "$b")
ipb=$(ip_of "$pb")

log "§12.3 nothing in clear: capture on $a's underlay during ICMP, TCP and UDP to $b"
underlay=$(kc get node "$a" -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}')
prefix=${underlay%.*}.
capture_pod=$(capture_on "$a")
kc -n vpblu-e2e exec "$capture_pod" -- sh -c 'timeout 12 tcpdump -i eth0 -n -l -t -U not port 6443 and not port 10250 > /tmp/capture.txt 2>/dev/null; true' &
capture_pid=$!
sleep 2
kc -n vpblu-e2e exec "$pb" -- sh -c 'timeout 8 iperf3 -s -1 >/dev/null 2>&1 &' || true
kc -n vpblu-e2e exec "$pa" -- ping -c 20 -i 0.1 "$ipb" >/dev/null
kc -n vpblu-e2e exec "$pa" -- iperf3 -c "$ipb" -t 3 >/dev/null
kc -n vpblu-e2e exec "$pa" -- iperf3 -c "$ipb" -u -b 5M -t 1 >/dev/null || true
wait "$capture_pid"
kc -n vpblu-e2e exec "$capture_pod" -- cat /tmp/capture.txt \
  | "$classify" classify --underlay-prefix "$prefix" --mesh-port 51820 --mesh-port 51821 --allow-other-ports 6443,10250,443,53 \
      --pod-marker 10.244.

log "§12.4 a BlockPolicy drops $a -> $b within 1 s, on both sides; deleting it restores traffic"
src=$(kc get node "$a" -o jsonpath='{.spec.podCIDR}')
dst=$(kc get node "$b" -o jsonpath='{.spec.podCIDR}')
kc -n vpblu-e2e exec "$pa" -- ping -c 3 -W 1 "$ipb" >/dev/null
start=$(date +%s%N)
kc apply -f - <<EOF
apiVersion: vpblu.dev/v1alpha1
kind: BlockPolicy
metadata: {name: e2e-block}
spec:
  blocks:
    - {from: "$src", to: "$dst", bidirectional: true}
EOF
until ! kc -n vpblu-e2e exec "$pa" -- ping -c 1 -W 0.2 "$ipb" >/dev/null 2>&1; do
  (( ($(date +%s%N) - start) / 1000000 < 5000 )) || die "the block did not take effect within 5 s"
done
echo "block effective after $(( ($(date +%s%N) - start) / 1000000 )) ms (includes kubectl exec round trips)"
kc delete blockpolicy e2e-block
kc -n vpblu-e2e exec "$pa" -- ping -c 3 -W 1 "$ipb" >/dev/null
echo "traffic restored"

log "§12.8 large packets: the largest DF ping that fits passes, one byte more is refused"
mtu=$(kc get vpblunode "$a" -o jsonpath='{.status.mtu}')
kc -n vpblu-e2e exec "$pa" -- ping -c 2 -M "do" -s $((mtu - 28)) "$ipb" >/dev/null
if kc -n vpblu-e2e exec "$pa" -- ping -c 2 -M "do" -s $((mtu - 27)) "$ipb" 2>&1 | grep -qi "message too long\|frag needed\|mtu"; then
  echo "mtu $mtu: $((mtu - 28)) bytes pass, $((mtu - 27)) get fragmentation needed"
else
  die "a DF ping one byte over the mesh MTU $mtu was not refused loudly"
fi
kc -n vpblu-e2e exec "$pb" -- sh -c 'timeout 40 iperf3 -s -1 >/dev/null 2>&1 &' || true
kc -n vpblu-e2e exec "$pa" -- iperf3 -c "$ipb" -t 30 | tail -4

log "§12.7 both controllers gone: pod traffic keeps flowing"
kc -n vpblu-system scale deployment/vpblu-controller --replicas=0
out=$(kc -n vpblu-e2e exec "$pa" -- ping -q -c 3000 -i 0.01 "$ipb" || true)
grep -q " 0% packet loss" <<<"$out" || die "traffic lost packets without controllers: $out"
kc -n vpblu-system scale deployment/vpblu-controller --replicas=2
kc -n vpblu-system rollout status deployment/vpblu-controller --timeout=180s
echo "30 s without controllers, 0% loss"

log "§12.6 every node rotates its key while pods ping at 100/s: zero loss"
declare -A old_key
for node in "${node_list[@]}"; do
  old_key[$node]=$(kc get vpblunode "$node" -o jsonpath='{.status.publicKey}')
done
since=$(date -u -d '-1 second' +%Y-%m-%dT%H:%M:%SZ)
kc -n vpblu-e2e exec "$pa" -- sh -c "ping -q -i 0.01 -w 240 $ipb > /tmp/rotation-ping.txt 2>&1 &"
kc apply -f - <<EOF
apiVersion: vpblu.dev/v1alpha1
kind: RotationPolicy
metadata:
  name: e2e-rotation
  annotations: {vpblu.dev/rotate-now: "e2e-$since"}
spec:
  schedule: "0 0 3 * * Sun"
  overlapSeconds: 2
EOF
deadline=$((SECONDS + 240))
done_nodes=0
until (( SECONDS > deadline )); do
  done_nodes=0
  for node in "${node_list[@]}"; do
    phase=$(kc get vpblunode "$node" -o jsonpath='{.status.rotation.phase}')
    started=$(kc get vpblunode "$node" -o jsonpath='{.status.rotation.startedAt}')
    result=$(kc get vpblunode "$node" -o jsonpath='{.status.rotation.lastResult}')
    if [[ $phase == Idle && -n $result && ! $started < $since ]]; then
      [[ $result == Succeeded ]] || die "$node's rotation ended with: $result"
      done_nodes=$((done_nodes + 1))
    fi
  done
  (( done_nodes == node_count )) && break
  sleep 2
done
(( done_nodes == node_count )) || die "only $done_nodes of $node_count nodes rotated within 240 s"
kc -n vpblu-e2e exec "$pa" -- sh -c 'pkill -INT ping; sleep 1; cat /tmp/rotation-ping.txt'
for node in "${node_list[@]}"; do
  [[ $(kc get vpblunode "$node" -o jsonpath='{.status.publicKey}') != "${old_key[$node]}" ]] \
    || die "$node still publishes its old key"
done
kc -n vpblu-e2e exec "$pa" -- cat /tmp/rotation-ping.txt | grep -q " 0% packet loss" \
  || die "pings were lost during the rotation"
kc delete rotationpolicy e2e-rotation
echo "every node rotated, new keys published, 0% ping loss"

log "§12.5 deleting a Node removes its peer everywhere"
victim=${node_list[2]}
kc delete node "$victim"
deadline=$((SECONDS + 60))
until (( SECONDS > deadline )); do
  left=0
  for node in "${node_list[@]:0:2}"; do
    peers=$(kc get vpblunode "$node" -o jsonpath='{.status.peers}' 2>/dev/null || true)
    (( ${peers:-0} > node_count - 2 )) && left=$((left + 1))
  done
  (( left == 0 )) && break
  sleep 1
done
(( left == 0 )) || die "$victim is still a peer of $left node(s)"
echo "$victim removed from every peer list"

log "all kind checks passed"
