#!/usr/bin/env bash
# Smoke test for the testbed binaries: start etcd and kube-apiserver on
# 127.0.0.1 (free ports, throw-away temp dir), wait for /readyz with an admin
# client certificate, print the time it took, then stop both and clean up.
#
#   tools/testbed/smoke.sh            # builds first if needed (build.sh)
#   TESTBED_BIN=/path/to/bin tools/testbed/smoke.sh
#   KEEP=1 tools/testbed/smoke.sh     # leave the temp dir (certs, logs, kubeconfig)
#   APISERVER_ARGS="--v=2 --feature-gates=..." tools/testbed/smoke.sh   # extra flags
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bin=${TESTBED_BIN:-$("$here/build.sh" | tail -1)}
timeout_s=${READY_TIMEOUT:-120}
read -ra extra_args <<<"${APISERVER_ARGS:-}"

say() { printf 'smoke: %s\n' "$*" >&2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/vpblu-testbed.XXXXXX")
etcd_pid="" apiserver_pid=""
cleanup() {
	local pid
	for pid in "$apiserver_pid" "$etcd_pid"; do
		[[ -n $pid ]] || continue
		kill "$pid" 2>/dev/null || true
		for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	if [[ -n ${KEEP:-} ]]; then say "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# A random loopback TCP port nobody listens on (and not handed out before).
used=" "
free_port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 12000))
		[[ $used == *" $p "* ]] && continue
		[[ -z $(ss -Htln "sport = :$p") ]] && break
	done
	used+="$p "
	echo "$p"
}
etcd_client=$(free_port)
etcd_peer=$(free_port)
api_port=$(free_port)

# --- certificates (ECDSA P-256 for TLS, RSA for service-account tokens) ---
cd "$work"
ossl() { openssl "$@" 2>>openssl.log; }
ec_key() { ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }
ec_key ca.key
ossl req -x509 -new -key ca.key -subj "/CN=vpblu-testbed-ca" -days 2 -out ca.crt
# sign NAME SUBJECT EXTENSIONS
sign() {
	ec_key "$1.key"
	ossl req -new -key "$1.key" -subj "$2" -out "$1.csr"
	printf '%s\n' "$3" >"$1.ext"
	ossl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
		-extfile "$1.ext" -out "$1.crt"
}
sign serving "/CN=kube-apiserver" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
sign admin "/O=system:masters/CN=admin" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
ossl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key
ossl pkey -in sa.key -pubout -out sa.pub

cat >kubeconfig <<EOF
apiVersion: v1
kind: Config
clusters:
- name: testbed
  cluster: {server: "https://127.0.0.1:$api_port", certificate-authority: "$work/ca.crt"}
users:
- name: admin
  user: {client-certificate: "$work/admin.crt", client-key: "$work/admin.key"}
contexts:
- name: testbed
  context: {cluster: testbed, user: admin}
current-context: testbed
EOF

# --- start ------------------------------------------------------------------
t0=$(date +%s.%N)
"$bin/etcd" \
	--name=testbed \
	--data-dir="$work/etcd" \
	--listen-client-urls="http://127.0.0.1:$etcd_client" \
	--advertise-client-urls="http://127.0.0.1:$etcd_client" \
	--listen-peer-urls="http://127.0.0.1:$etcd_peer" \
	--initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer" \
	--initial-cluster="testbed=http://127.0.0.1:$etcd_peer" \
	--unsafe-no-fsync \
	--log-level=warn \
	>etcd.log 2>&1 &
etcd_pid=$!

"$bin/kube-apiserver" \
	--bind-address=127.0.0.1 \
	--secure-port="$api_port" \
	--etcd-servers="http://127.0.0.1:$etcd_client" \
	--service-cluster-ip-range=10.96.0.0/16 \
	--authorization-mode=Node,RBAC \
	--client-ca-file="$work/ca.crt" \
	--tls-cert-file="$work/serving.crt" \
	--tls-private-key-file="$work/serving.key" \
	--service-account-issuer=https://kubernetes.default.svc \
	--service-account-key-file="$work/sa.pub" \
	--service-account-signing-key-file="$work/sa.key" \
	"${extra_args[@]}" \
	>apiserver.log 2>&1 &
apiserver_pid=$!
say "etcd pid $etcd_pid (client :$etcd_client), kube-apiserver pid $apiserver_pid (:$api_port); dir $work"

# curl_admin PATH [curl args...]
curl_admin() {
	local path=$1
	shift
	curl -sS --max-time 5 --cacert ca.crt --cert admin.crt --key admin.key "$@" "https://127.0.0.1:$api_port$path"
}
ready=""
deadline=$((SECONDS + timeout_s))
while ((SECONDS < deadline)); do
	for pid in "$etcd_pid" "$apiserver_pid"; do
		if ! kill -0 "$pid" 2>/dev/null; then
			say "process $pid exited early; last lines of logs:"
			tail -n 20 etcd.log apiserver.log >&2
			exit 1
		fi
	done
	if [[ $(curl_admin /readyz 2>/dev/null || true) == ok ]]; then ready=1; break; fi
	sleep 0.1
done
t1=$(date +%s.%N)
if [[ -z $ready ]]; then
	say "/readyz not ok after ${timeout_s}s:"
	curl_admin '/readyz?verbose' >&2 || true
	tail -n 30 apiserver.log >&2
	exit 1
fi
say "/readyz ok after $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')s"
say "/version: $(curl_admin /version | tr -d ' \n')"
say "whoami: $(curl_admin /apis/authentication.k8s.io/v1/selfsubjectreviews \
	-H 'Content-Type: application/json' \
	-d '{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}' | tr -d ' \n')"
