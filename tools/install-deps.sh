#!/usr/bin/env bash
# Installs what vpblu's build and tests need, idempotently: quick when
# everything is there, apt-get only for what is missing.
set -euo pipefail

need_go="1.26"

missing_pkgs=()
want() { # want COMMAND DEBIAN-PACKAGE
  command -v "$1" >/dev/null 2>&1 || missing_pkgs+=("$2")
}

want cargo "(rustup: https://rustup.rs — the Rust toolchain is not a Debian package here)"
want make make
want git git
want clang-19 clang-19
want llvm-objdump-19 llvm-19
want bpftool bpftool
want ip iproute2
want ping iputils-ping
want tcpdump tcpdump
want nft nftables
want iperf3 iperf3
# The dashboard's end-to-end test (headless) and meshtop's (through tmux).
want chromium chromium
want tmux tmux
[[ -f /usr/include/bpf/bpf_helpers.h ]] || missing_pkgs+=(libbpf-dev)

for p in "${missing_pkgs[@]}"; do
  case "$p" in
    "("*) echo "install-deps: cargo is missing $p" >&2; exit 1 ;;
  esac
done

if ((${#missing_pkgs[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: missing packages ${missing_pkgs[*]}; run as root or install them" >&2
    exit 1
  fi
  echo "install-deps: apt-get install ${missing_pkgs[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing_pkgs[@]}" >/dev/null
fi

# Go builds the Kubernetes control plane for the tests. Debian's golang is
# far too old; the machine's Go (or GOTOOLCHAIN) must be recent.
go_bin=$(command -v go || true)
[[ -z $go_bin && -x /usr/local/go/bin/go ]] && go_bin=/usr/local/go/bin/go
if [[ -z $go_bin ]]; then
  echo "install-deps: Go >= $need_go is needed to build kube-apiserver and etcd (none on PATH or in /usr/local/go)" >&2
  exit 1
fi
have=$("$go_bin" env GOVERSION | sed 's/^go//')
if [[ $(printf '%s\n%s\n' "$need_go" "$have" | sort -V | head -1) != "$need_go" ]]; then
  echo "install-deps: Go $have at $go_bin is too old; Go >= $need_go is needed to build kube-apiserver" >&2
  exit 1
fi
