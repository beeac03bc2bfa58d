#!/usr/bin/env bash
# The §12 acceptance checks on a real 3-node kind cluster, built offline:
#
#   tools/kind/e2e.sh            build (cached) what it needs, create the
#                                cluster, helm install vpblu, run §12.1-8,
#                                print the table, helm uninstall, check the
#                                nodes are clean, delete the cluster
#   tools/kind/e2e.sh --keep     leave the cluster up afterwards
#   tools/kind/e2e.sh down       remove a cluster (and engine) a killed run left
#
# Environment: KIND_CLUSTER (default vpblu-e2e), VPBLU_KIND_PROFILE
# (release|debug: which vpblu binaries go into the images; default release),
# VPBLU_KIND_DIR (cache root), DOCKER_HOST (default: a private dockerd
# started by engine.sh and stopped again at the end).
#
# Everything comes from this machine: the node image and the Kubernetes,
# etcd, CoreDNS, Flannel and tools images (node-image.sh, build.sh), the
# vpblu images (make images), helm (tools/helm). The capture for §12.3 is
# taken on the host side of the kind network's bridge and judged by the
# lab's own classifier (`vpblu-lab classify`), as in the lab.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cluster=${KIND_CLUSTER:-vpblu-e2e}
profile=${VPBLU_KIND_PROFILE:-release}
target=${CARGO_TARGET_DIR:-$HOME/.cache/vpblu/target}
keep=false
mode=run
case "${1:-}" in
"") ;;
--keep) keep=true ;;
down) mode=down ;;
*) echo "usage: $0 [--keep|down]" >&2; exit 2 ;;
esac

started=$SECONDS
log() { printf '\n== [%4ds] %s\n' $((SECONDS - started)) "$*"; }
die() { printf 'kind e2e: error: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "the kind run needs root (a private dockerd, privileged nodes, a capture on the kind bridge); run as root"
"$here/deps.sh"
engine_was_up=false
if [[ -z ${DOCKER_HOST:-} ]]; then
	"$here/engine.sh" status && engine_was_up=true
	DOCKER_HOST=$("$here/engine.sh" up)
fi
export DOCKER_HOST
bin=$("$here/build.sh" | tail -1)
export PATH=$bin:$PATH
kc() { kubectl --context "kind-$cluster" "$@"; }
# pods_gone SECONDS [SELECTOR...]: waits until no vpblu-system pod (matching
# the selector) is left; false if some still are after SECONDS.
pods_gone() {
	local within=$1
	shift
	for _ in $(seq "$within"); do
		[[ -z $(kc -n vpblu-system get pods "$@" -o name) ]] && return 0
		sleep 1
	done
	[[ -z $(kc -n vpblu-system get pods "$@" -o name) ]]
}

if [[ $mode == down ]]; then
	kind delete cluster --name "$cluster"
	[[ $engine_was_up == true ]] || "$here/engine.sh" down
	exit 0
fi

if kind get clusters 2>/dev/null | grep -qx "$cluster"; then
	die "a kind cluster named $cluster already exists (a killed run?); remove it with: make kind-down (or KIND_CLUSTER=other)"
fi
command -v tcpdump >/dev/null || die "tcpdump is missing (it captures the kind network for §12.3): apt-get install tcpdump"

log "building the node image, the vpblu images, the classifier and helm (cached)"
node_image=$("$here/node-image.sh" | tail -1)
# shellcheck source=/dev/null
source "$bin/versions.env"
case $profile in
release) make -C "$root" --no-print-directory images ;;
debug)
	cargo build --locked -q -p vpblu-controller -p vpblu-daemon --bins
	"$root/tools/images/build.sh" "$target/debug" "$target/images" >/dev/null
	;;
*) die "VPBLU_KIND_PROFILE=$profile: use release or debug" ;;
esac
tag=$(git -C "$root" describe --tags --always --dirty)
cargo build --locked -q -p vpblu-e2e --bin vpblu-lab
classify=$target/debug/vpblu-lab
helm=$("$root/tools/helm/build.sh" | tail -1)/helm

results=()
row() { results+=("$(printf '%-5s %-34s %-6s %s' "$1" "$2" "$3" "$4")"); }
table() {
	printf '\n%-5s %-34s %-6s %s\n' "§12" "criterion" "result" "measured"
	printf '%s\n' "${results[@]}"
}

failed=true
cleanup() {
	local rc=$?
	if [[ $failed == true && $rc != 0 ]] && kind get clusters 2>/dev/null | grep -qx "$cluster"; then
		printf '\n== what is not Ready\n'
		kc get nodes -o wide || true
		kc get pods -A -o wide || true
		for pod in $(kc get pods -A --no-headers 2>/dev/null | awk '$4 != "Running" && $4 != "Completed" || $3 !~ /^([0-9]+)\/\1$/ {print $1 "/" $2}'); do
			kc -n "${pod%%/*}" describe pod "${pod#*/}" | tail -25 || true
		done
		for pod in $(kc -n vpblu-system get pods -o name 2>/dev/null); do
			printf '\n== logs of %s\n' "$pod"
			kc -n vpblu-system logs "$pod" --all-containers --tail 60 || true
		done
	fi
	((${#results[@]} == 0)) || table
	if [[ $keep == true ]]; then
		log "cluster $cluster left up: kubectl --context kind-$cluster ...; remove it with make kind-down"
	else
		log "deleting kind cluster $cluster"
		kind delete cluster --name "$cluster" >/dev/null 2>&1 || true
		[[ $engine_was_up == true ]] || "$here/engine.sh" down || true
	fi
	log "total $((SECONDS - started)) s"
}
trap cleanup EXIT

log "§12.1 creating kind cluster $cluster ($node_image)"
t0=$SECONDS
sed "s/ETCD_TAG/${etcd_version#v}-0/" "$here/cluster.yaml" >"$target/kind-cluster.yaml"
kind create cluster --name "$cluster" --image "$node_image" --config "$target/kind-cluster.yaml" --retain
sed "s/FLANNEL_VERSION/$flannel_version/g" "$here/flannel.yaml" | kc apply -f - >/dev/null
# The nodes resolve through Docker's embedded DNS (127.0.0.11), which is
# loopback: CoreDNS forwarding there from its pod would query itself (its
# loop plugin stops it). Offline there is nothing upstream to ask, so it
# forwards to the kind network's gateway, which refuses quickly.
gateway=$(docker network inspect kind -f '{{range .IPAM.Config}}{{.Gateway}} {{end}}' | tr ' ' '\n' | grep -F . | head -1)
kc -n kube-system get configmap coredns -o json |
	jq --arg gw "$gateway" '.data.Corefile |= sub("forward \\. /etc/resolv\\.conf"; "forward . " + $gw)' |
	kc replace -f - >/dev/null
kc -n kube-system rollout restart deployment/coredns >/dev/null
kc wait --for=condition=Ready nodes --all --timeout=180s
create_s=$((SECONDS - t0))

for image in vpblu-controller vpblu-daemon; do
	kind load image-archive --name "$cluster" "$target/images/$image-$tag.tar"
done
kc create namespace vpblu-e2e >/dev/null
sed "s|E2E_TOOLS_IMAGE|vpblu.dev/e2e-tools:${node_image##*-}|" "$here/probe-pods.yaml" | kc apply -f - >/dev/null

t0=$SECONDS
"$helm" --kube-context "kind-$cluster" install vpblu "$root/chart/vpblu" \
	--namespace vpblu-system --create-namespace --wait --timeout 5m \
	--set images.controller.tag="$tag" --set images.daemon.tag="$tag" \
	--set images.controller.pullPolicy=Never --set images.daemon.pullPolicy=Never \
	--set tunnelPolicy.create=true
kc -n vpblu-system rollout status daemonset/vpblu-daemon --timeout=180s
leader=""
for _ in $(seq 60); do
	leader=$(kc -n vpblu-system get lease vpblu-controller -o jsonpath='{.spec.holderIdentity}' 2>/dev/null || true)
	[[ -n $leader ]] && break
	sleep 1
done
[[ -n $leader ]] || die "no controller holds the vpblu-controller Lease after 60 s"
desired=$(kc -n vpblu-system get daemonset vpblu-daemon -o jsonpath='{.status.desiredNumberScheduled}')
ready=$(kc -n vpblu-system get daemonset vpblu-daemon -o jsonpath='{.status.numberReady}')
row 12.1 "kind 3-node deploy (helm install)" PASS "cluster ${create_s}s, helm $((SECONDS - t0))s, daemons $ready/$desired, leader $leader"
[[ $ready == 3 ]] || die "vpblu-daemon is $ready/$desired ready"
kc -n vpblu-e2e rollout status daemonset/probe --timeout=180s

read -r -a node_list <<<"$(kc get nodes -o jsonpath='{.items[*].metadata.name}')"
node_count=${#node_list[@]}
probe_on() { kc -n vpblu-e2e get pods -l app=probe --field-selector "spec.nodeName=$1" -o jsonpath='{.items[0].metadata.name}'; }
ip_of() { kc -n vpblu-e2e get pod "$1" -o jsonpath='{.status.podIP}'; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

log "§12.2 FullMesh: every node has every other node as a peer"
t0=$(now_ms)
ok=0
for _ in $(seq 120); do
	ok=0
	for node in "${node_list[@]}"; do
		peers=$(kc get vpblunode "$node" -o jsonpath='{.status.peersUp}' 2>/dev/null || true)
		((${peers:-0} >= node_count - 1)) && ok=$((ok + 1))
	done
	((ok == node_count)) && break
	sleep 1
done
((ok == node_count)) || { kc get vpblunodes -o yaml; die "only $ok of $node_count nodes report all peers up"; }
row 12.2 "FullMesh peers form" PASS "$node_count nodes x $((node_count - 1)) peers up (+$(($(now_ms) - t0)) ms after the rollout)"

a=${node_list[1]}
b=${node_list[2]}
pa=$(probe_on "$a")
pb=$(probe_on "$b")
ipb=$(ip_of "$pb")

log "§12.3 nothing in clear: capture on the kind bridge during ICMP, TCP and UDP $a -> $b"
network_id=$(docker network inspect kind -f '{{.Id}}')
bridge=br-${network_id:0:12}
underlay=$(docker inspect "$a" -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}')
capture=$target/kind-capture.txt
# Node to node only: not the API server and kubelet ports, and not the host
# itself (CoreDNS forwards to the gateway, which answers nothing offline).
timeout 25 tcpdump -i "$bridge" -n -l -t -U "ip and not port 6443 and not port 10250 and not host $gateway" >"$capture" 2>/dev/null &
capture_pid=$!
sleep 2
kc -n vpblu-e2e exec "$pb" -- sh -c 'timeout 15 iperf3 -s -1 >/dev/null 2>&1 &'
kc -n vpblu-e2e exec "$pa" -- ping -q -c 20 -i 0.1 "$ipb" >/dev/null
kc -n vpblu-e2e exec "$pa" -- iperf3 -c "$ipb" -t 3 >/dev/null
kc -n vpblu-e2e exec "$pb" -- sh -c 'timeout 8 iperf3 -s -1 >/dev/null 2>&1 &'
kc -n vpblu-e2e exec "$pa" -- iperf3 -c "$ipb" -u -b 5M -t 2 >/dev/null
kill "$capture_pid" 2>/dev/null || true
wait "$capture_pid" 2>/dev/null || true
verdict=$("$classify" classify --underlay-prefix "${underlay%.*}." --mesh-port 51820 --mesh-port 51821 \
	--allow-other-ports 6443,10250,443,53,9443 --pod-marker 10.244. <"$capture") ||
	{ echo "$verdict"; die "pod traffic crossed the kind network outside WireGuard (capture: $capture)"; }
echo "$verdict"
row 12.3 "only WireGuard UDP on the wire" PASS "$(head -1 <<<"$verdict" | sed 's/^capture: //')"

log "§12.4 a BlockPolicy drops $a -> $b on both sides; deleting it restores traffic"
src=$(kc get node "$a" -o jsonpath='{.spec.podCIDR}')
dst=$(kc get node "$b" -o jsonpath='{.spec.podCIDR}')
kc -n vpblu-e2e exec "$pa" -- ping -c 3 -W 1 "$ipb" >/dev/null
t0=$(now_ms)
kc apply -f - >/dev/null <<YAML
apiVersion: vpblu.dev/v1alpha1
kind: BlockPolicy
metadata: {name: e2e-block}
spec:
  blocks:
    - {from: "$src", to: "$dst", bidirectional: true}
YAML
until ! kc -n vpblu-e2e exec "$pa" -- ping -c 1 -W 0.2 "$ipb" >/dev/null 2>&1; do
	(($(now_ms) - t0 < 5000)) || die "the block did not take effect within 5 s"
done
block_ms=$(($(now_ms) - t0))
if kc -n vpblu-e2e exec "$pb" -- ping -c 2 -W 1 "$(ip_of "$pa")" >/dev/null 2>&1; then
	die "the bidirectional block let $b -> $a through"
fi
kc delete blockpolicy e2e-block >/dev/null
t0=$(now_ms)
until kc -n vpblu-e2e exec "$pa" -- ping -c 1 -W 0.2 "$ipb" >/dev/null 2>&1; do
	(($(now_ms) - t0 < 5000)) || die "traffic did not come back within 5 s of deleting the block"
done
row 12.4 "BlockPolicy drops < 1 s" PASS "effective after $block_ms ms (incl. kubectl exec), both ways; restored $(($(now_ms) - t0)) ms after delete"

log "§12.8 large packets: the largest DF ping that fits passes, one byte more is refused"
mtu=$(kc get vpblunode "$a" -o jsonpath='{.status.mtu}')
[[ -n $mtu ]] || die "vpblunode $a reports no status.mtu"
kc -n vpblu-e2e exec "$pa" -- ping -c 2 -M do -s $((mtu - 28)) "$ipb" >/dev/null ||
	die "a DF ping of $((mtu - 28)) bytes (mesh MTU $mtu) did not pass"
over=$(kc -n vpblu-e2e exec "$pa" -- ping -c 2 -M do -s $((mtu - 27)) "$ipb" 2>&1 || true)
grep -qiE "message too long|frag needed|mtu" <<<"$over" || die "a DF ping one byte over the mesh MTU $mtu was not refused: $over"
kc -n vpblu-e2e exec "$pb" -- sh -c 'timeout 20 iperf3 -s -1 >/dev/null 2>&1 &'
gbits=$(kc -n vpblu-e2e exec "$pa" -- iperf3 -c "$ipb" -t 5 -J | jq -r '.end.sum_received.bits_per_second / 1e9 | . * 100 | floor / 100')
row 12.8 "large packets, MTU/MSS" PASS "mtu $mtu: $((mtu - 28)) B DF pass, $((mtu - 27)) B refused; TCP $gbits Gbit/s"

log "§12.7 both controllers gone: pod traffic keeps flowing"
kc -n vpblu-system scale deployment/vpblu-controller --replicas=0 >/dev/null
pods_gone 60 -l app.kubernetes.io/name=vpblu-controller ||
	die "controller pods still there 60 s after scaling to 0: kubectl --context kind-$cluster -n vpblu-system get pods"
out=$(kc -n vpblu-e2e exec "$pa" -- ping -q -c 2000 -i 0.01 "$ipb" || true)
grep -q " 0% packet loss" <<<"$out" || die "traffic lost packets without controllers: $out"
kc -n vpblu-system scale deployment/vpblu-controller --replicas=2 >/dev/null
kc -n vpblu-system rollout status deployment/vpblu-controller --timeout=180s
row 12.7 "controllers down, data plane lives" PASS "2000 pings at 100/s with 0 controllers: $(grep -o '[0-9]* received' <<<"$out"), 0% loss"

log "§12.6 every node rotates its key while pods ping at 100/s: zero loss"
declare -A old_key
for node in "${node_list[@]}"; do
	old_key[$node]=$(kc get vpblunode "$node" -o jsonpath='{.status.publicKey}')
done
since=$(date -u -d '-1 second' +%Y-%m-%dT%H:%M:%SZ)
# Every reply, timestamped: a lost one is named by its icmp_seq and placed
# between the replies before and after it (to read beside the phases).
kc -n vpblu-e2e exec "$pa" -- sh -c "ping -D -i 0.01 -w 300 $ipb >/tmp/rotation-ping.txt 2>&1 &"
t0=$SECONDS
kc apply -f - >/dev/null <<YAML
apiVersion: vpblu.dev/v1alpha1
kind: RotationPolicy
metadata:
  name: e2e-rotation
  annotations: {vpblu.dev/rotate-now: "e2e-$since"}
spec:
  schedule: "0 0 3 * * Sun"
  overlapSeconds: 2
YAML
done_nodes=0
for _ in $(seq 240); do
	done_nodes=0
	for node in "${node_list[@]}"; do
		status=$(kc get vpblunode "$node" -o jsonpath='{.status.rotation.phase} {.status.rotation.lastResult} {.status.rotation.startedAt}')
		read -r phase result started_at <<<"$status"
		if [[ $phase == Idle && -n $result && -n $started_at && ! $started_at < $since ]]; then
			[[ $result == Succeeded ]] || die "$node's rotation ended with: $result"
			done_nodes=$((done_nodes + 1))
		fi
	done
	((done_nodes == node_count)) && break
	sleep 1
done
((done_nodes == node_count)) || die "only $done_nodes of $node_count nodes rotated within 240 s"
rotate_s=$((SECONDS - t0))
sleep 2
kc -n vpblu-e2e exec "$pa" -- sh -c 'pkill -INT ping; sleep 1'
ping_out=$(kc -n vpblu-e2e exec "$pa" -- cat /tmp/rotation-ping.txt)
for node in "${node_list[@]}"; do
	[[ $(kc get vpblunode "$node" -o jsonpath='{.status.publicKey}') != "${old_key[$node]}" ]] ||
		die "$node still publishes its old key"
done
# SIGINT ends ping at once: the request it sent last may still be on its
# way, and ping counts it lost. Every other request must have its reply.
sent=$(sed -n 's/^\([0-9]*\) packets transmitted.*/\1/p' <<<"$ping_out")
[[ -n $sent ]] || die "no ping statistics after the rotation: $(tail -5 <<<"$ping_out")"
lost=$(grep ' bytes from .*icmp_seq=' <<<"$ping_out" | sed 's/.*icmp_seq=\([0-9]*\).*/\1/' |
	awk -v sent="$sent" '{ got[$1] = 1 } END { for (s = 1; s < sent; s++) if (!(s in got)) printf "%s%d", (n++ ? " " : ""), s }')
if [[ -n $lost ]]; then
	around=$(for seq in $(cut -d" " -f1-10 <<<"$lost"); do
		grep -E "icmp_seq=($((seq - 1))|$((seq + 1))) " <<<"$ping_out"
	done)
	die "pings were lost during the rotation: icmp_seq $lost of $sent sent; the replies around them:
$around
$(tail -3 <<<"$ping_out")"
fi
received=$(sed -n 's/.* \([0-9]*\) received.*/\1/p' <<<"$ping_out")
kc delete rotationpolicy e2e-rotation >/dev/null
row 12.6 "zero-drop rotation" PASS "$node_count nodes in ${rotate_s}s, new keys published; $sent pings sent, $received replies, none lost$( ((received < sent)) && echo ' (the last one was in flight when ping stopped)')"

log "§12.5 deleting a Node removes its peer everywhere"
victim=${node_list[2]}
t0=$(now_ms)
kc delete node "$victim" >/dev/null
left=1
for _ in $(seq 120); do
	left=0
	for node in "${node_list[@]:0:2}"; do
		peers=$(kc get vpblunode "$node" -o jsonpath='{.status.peers}' 2>/dev/null || true)
		((${peers:-0} > node_count - 2)) && left=$((left + 1))
	done
	((left == 0)) && break
	sleep 0.5
done
((left == 0)) || die "$victim is still a peer of $left node(s)"
gone_ms=$(($(now_ms) - t0))
# The kubelet registers the node again when it restarts: the peer comes back.
docker exec "$victim" systemctl restart kubelet
for _ in $(seq 60); do kc get node "$victim" >/dev/null 2>&1 && break; sleep 1; done
kc wait --for=condition=Ready "node/$victim" --timeout=120s >/dev/null
kc -n vpblu-system rollout status daemonset/vpblu-daemon --timeout=180s >/dev/null
row 12.5 "node delete drops peer" PASS "$victim gone from every peer list in $gone_ms ms; re-registered"

failed=false
table

log "helm uninstall: no WireGuard device, pinned map, fwmark rule or route left on the nodes"
# The daemons log what they removed as they stop; their pods and logs go
# with the uninstall, so follow them from before it.
removal_log=$(mktemp)
kc -n vpblu-system logs -f -l app.kubernetes.io/name=vpblu-daemon --prefix --max-log-requests 20 --tail 0 \
	>"$removal_log" 2>&1 &
follower=$!
sleep 2
uninstall_started=$SECONDS
"$helm" --kube-context "kind-$cluster" uninstall vpblu --namespace vpblu-system --wait --timeout 3m
pods_gone 120 ||
	die "vpblu's pods were still there 120 s after helm uninstall: kubectl --context kind-$cluster -n vpblu-system get pods"
uninstall_took=$((SECONDS - uninstall_started))
kill "$follower" 2>/dev/null || true
wait "$follower" 2>/dev/null || true
removed=$(grep -c "vpblu removed from this node" "$removal_log" || true)
stops=$(grep -E "stopped;|removing vpblu|vpblu removed|not entirely removed" "$removal_log" | cut -c1-600 || true)
if [[ -n $stops ]]; then
	sed 's/^/  /' <<<"$stops"
else
	echo "no daemon logged its stop; what the log follower saw:"
	tail -40 "$removal_log" | sed 's/^/  /'
fi
rm -f "$removal_log"
leftovers=0
for node in "${node_list[@]}"; do
	found=$(docker exec "$node" sh -c '
		ip -o link show | grep -E "wg-mesh|wg-lane" || true
		ls /sys/fs/bpf 2>/dev/null | grep -i vpblu || true
		ip rule show | grep -E "0x56500000|proto 86" || true
		ip route show table 22096 2>/dev/null || true
		ip route show table all | grep -E "wg-mesh|wg-lane" || true
		nft list table inet vpblu >/dev/null 2>&1 && echo "nftables table inet vpblu"
		for dev in $(ls /sys/class/net); do
			tc filter show dev "$dev" ingress 2>/dev/null | grep -E "classify|deliver" | sed "s/^/$dev: /"
		done
		ls /var/lib/vpblu/private.key /var/lib/vpblu/state/applied-generation 2>/dev/null || true
		pgrep -a wireguard-go || true')
	if [[ -n $found ]]; then
		echo "$node keeps:"; sed 's/^/  /' <<<"$found"
		leftovers=$((leftovers + 1))
	fi
done
if ((leftovers > 0)); then
	row uninst "helm uninstall leaves nodes clean" FAIL "vpblu state left on $leftovers of $node_count nodes (above)"
	die "helm uninstall left vpblu state on $leftovers node(s) (above)"
fi
if ((removed != node_count)); then
	row uninst "helm uninstall leaves nodes clean" FAIL "$removed of $node_count daemons logged their removal"
	die "only $removed of $node_count daemons logged 'vpblu removed from this node'"
fi
row uninst "helm uninstall leaves nodes clean" PASS \
	"$removed/$node_count daemons removed vpblu (${uninstall_took}s); no device, pin, rule, route, tc filter, nft table, key or wireguard-go left"
log "all kind checks passed"
