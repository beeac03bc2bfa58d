#!/usr/bin/env bash
# A private Docker engine for kind, kept apart from the rest of the machine
# (the lab and the tests use netns, bridges and nftables of their own):
#
#   tools/kind/engine.sh up      start it (no-op when it already runs); prints
#                                the DOCKER_HOST to use on stdout
#   tools/kind/engine.sh down    stop it by PID (waits for it to exit)
#   tools/kind/engine.sh status  exit 0 when it answers
#
# It has its own data root (under the kind cache, so built images survive
# between runs), exec root, pid file and socket; it adds no iptables rules,
# no default bridge, and leaves ip_forward alone. kind's network is a
# user-defined bridge, which needs none of those: the nodes talk over it at
# L2 and the API server is published on loopback by docker-proxy.
#
# `docker run --privileged` asks for every capability, and this VM's bounding
# set lacks CAP_SYS_RESOURCE, so runc refuses. The engine's default runtime
# is a wrapper that deletes that one capability from the bundle's
# config.json and then runs the real runc.
#
# Environment: VPBLU_KIND_DIR (cache root, default ~/.cache/vpblu/kind),
# VPBLU_DOCKER_SOCK (default /run/vpblu-docker.sock).
set -euo pipefail

cache=${VPBLU_KIND_DIR:-$HOME/.cache/vpblu/kind}
sock=${VPBLU_DOCKER_SOCK:-/run/vpblu-docker.sock}
exec_root=/run/vpblu-docker
pidfile=$exec_root.pid
data_root=$cache/docker
wrapper=$cache/runc-without-sys-resource
log_file=$cache/dockerd.log
host="unix://$sock"

say() { printf 'kind engine: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

answers() { DOCKER_HOST=$host docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

running_pid() {
	local pid
	[[ -f $pidfile ]] || return 1
	pid=$(<"$pidfile")
	[[ -n $pid && -d /proc/$pid ]] || return 1
	[[ $(readlink "/proc/$pid/exe" 2>/dev/null) == */dockerd* ]] || return 1
	echo "$pid"
}

write_wrapper() {
	mkdir -p "$cache"
	cat >"$wrapper.tmp" <<'EOF'
#!/bin/sh
# Written by tools/kind/engine.sh: runc without CAP_SYS_RESOURCE, which this
# machine's capability bounding set lacks (runc would refuse --privileged).
# `runc create/run --bundle DIR` reads DIR/config.json; `runc exec --process
# FILE` (docker exec --privileged) reads FILE.
bundle=
process=
prev=
for arg in "$@"; do
	case "$prev" in
	--bundle|-b) bundle=$arg ;;
	--process|-p) process=$arg ;;
	esac
	case "$arg" in
	--bundle=*) bundle=${arg#--bundle=} ;;
	--process=*) process=${arg#--process=} ;;
	esac
	prev=$arg
done
drop='with_entries(.value |= map(select(. != "CAP_SYS_RESOURCE")))'
if [ -n "$bundle" ] && [ -f "$bundle/config.json" ]; then
	jq "if .process.capabilities then .process.capabilities |= $drop else . end" \
		"$bundle/config.json" >"$bundle/config.json.nocap" && mv "$bundle/config.json.nocap" "$bundle/config.json"
fi
if [ -n "$process" ] && [ -f "$process" ]; then
	jq "if .capabilities then .capabilities |= $drop else . end" "$process" >"$process.nocap" &&
		mv "$process.nocap" "$process"
fi
exec /usr/sbin/runc "$@"
EOF
	chmod 0755 "$wrapper.tmp"
	mv -f "$wrapper.tmp" "$wrapper"
}

up() {
	local missing=()
	for tool in dockerd containerd docker jq /usr/sbin/runc; do
		command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
	done
	((${#missing[@]} == 0)) || die "missing ${missing[*]}: run tools/kind/deps.sh (apt-get install docker.io jq)"
	[[ $(id -u) == 0 ]] || die "the private engine needs root (it creates $exec_root and $sock); run as root"
	if running_pid >/dev/null && answers; then
		say "already running (pid $(running_pid), $host)"
		echo "$host"
		return
	fi
	if [[ -S $sock ]] && ! running_pid >/dev/null; then
		say "removing a stale socket $sock"
		rm -f "$sock"
	fi
	write_wrapper
	mkdir -p "$data_root" "$exec_root"
	say "starting dockerd (data root $data_root, socket $sock, log $log_file)"
	# setsid: the engine outlives this script and is stopped by `down`.
	setsid dockerd \
		--data-root "$data_root" --exec-root "$exec_root" --pidfile "$pidfile" \
		-H "$host" \
		--iptables=false --ip6tables=false --ip-forward=false --ip-masq=false --bridge=none \
		--add-runtime "vpblu-runc=$wrapper" --default-runtime vpblu-runc \
		--storage-driver overlay2 \
		>"$log_file" 2>&1 </dev/null &
	local deadline=$((SECONDS + 60))
	until answers; do
		if ((SECONDS > deadline)); then
			tail -20 "$log_file" >&2
			die "dockerd did not answer on $host within 60 s (log above, full log $log_file)"
		fi
		sleep 0.5
	done
	say "running (pid $(running_pid))"
	echo "$host"
}

down() {
	local pid
	if ! pid=$(running_pid); then
		say "not running"
		return
	fi
	say "stopping dockerd (pid $pid)"
	kill -TERM "$pid"
	local deadline=$((SECONDS + 60))
	while [[ -d /proc/$pid ]]; do
		if ((SECONDS > deadline)); then
			say "dockerd $pid did not stop in 60 s; killing it"
			kill -KILL "$pid" 2>/dev/null || true
		fi
		sleep 0.5
	done
	rm -f "$sock"
}

case "${1:-}" in
up) up ;;
down) down ;;
status) answers ;;
*) printf 'usage: %s up|down|status\n' "$0" >&2; exit 2 ;;
esac
