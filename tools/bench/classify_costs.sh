#!/usr/bin/env bash
# Where classify's time goes on its slowest path (an IPv6 blocked pair):
# builds tools/bench/classify_costs.bpf.c once per part, loads each with its
# own maps (unpinned from the data plane's: pinned only under a private
# bpffs directory), fills them as the classify bench's 10k rules would
# (10,000 /64 destinations, 10,000 block sources), and times each with
# BPF_PROG_TEST_RUN (`bpftool prog run`, 1,000,000 runs, median of 5).
# Prints each part and its cost over the floor, beside the same path as
# a table walk in an ARRAY map (lookups the verifier inlines).
#
#   tools/bench/classify_costs.sh        (root; clang-19 and bpftool: make deps)
#
# Removes what it created (programs, pins, files) however it ends.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[[ $(id -u) == 0 ]] || { echo "classify_costs: loads eBPF programs: run it as root" >&2; exit 1; }
for tool in clang-19 bpftool; do
    command -v "$tool" >/dev/null || { echo "classify_costs: $tool not found (make deps installs it)" >&2; exit 1; }
done

work=$(mktemp -d /tmp/vpblu-classify-costs.XXXXXX)
pins=/sys/fs/bpf/vpblu-classify-costs-$$
cleanup() { rm -rf "$pins" "$work"; }
trap cleanup EXIT
mkdir -p "$pins"

# One Ethernet + IPv6 frame, fd60:59::8 -> fd70:27::8 (ICMPv6 echo).
frame=(02 00 00 00 00 02 02 00 00 00 00 01 86 dd 60 00 00 00 00 08 3a 40
    fd 60 00 59 00 00 00 00 00 00 00 00 00 00 00 08
    fd 70 00 27 00 00 00 00 00 00 00 00 00 00 00 08
    80 00 00 00 00 00 00 00)
printf "$(printf '\\x%s' "${frame[@]}")" >"$work/frame.bin"

# The bpftool batch that fills one part's maps (@MAPS@: its pin directory).
awk 'function le32(v) { return sprintf("%02x %02x %02x %02x", v % 256, int(v / 256) % 256, int(v / 65536) % 256, int(v / 16777216) % 256) }
     # The first 64 bits of A:B:: (16-bit groups), then 8 zero bytes.
     function v6(a, b) { return sprintf("%02x %02x %02x %02x 00 00 00 00 00 00 00 00 00 00 00 00", int(a / 256), a % 256, int(b / 256), b % 256) }
     function trie(node, byte, value) { printf "map update pinned @MAPS@/cost_trie key hex %s value hex %s\n", le32(node * 256 + byte), le32(value) }
     BEGIN {
         for (i = 0; i < 10000; i++) {
             # fd70:i::/64 (0xfd70 = 64880): a peer whose block class is 1 + i % 100.
             printf "map update pinned @MAPS@/cost_dst key hex %s %s value hex %s %s %s 03 01 40 00 00 00 00 00 00 00 00 00\n",
                 le32(64), v6(64880, i), le32(1), le32(0), le32(1 + i % 100)
             # {class 1 + i % 100, fd60:(i / 100)::/64} (0xfd60 = 64864) blocks.
             printf "map update pinned @MAPS@/cost_block key hex %s %s %s value hex 01\n",
                 le32(1 + i % 100), le32(64), v6(64864, int(i / 100))
         }
         # The table walk: fd70:27:: from node 1 ends at a leaf naming node
         # 9, the root of its class sources, where fd60:59:: ends at a leaf.
         split("253 112 0 39 0 0 0", dst, " "); split("253 96 0 89 0 0 0", src, " ")
         for (l = 1; l <= 7; l++) trie(l, dst[l], l + 1)
         trie(8, 0, 2147483648 + 9)
         for (l = 1; l <= 7; l++) trie(8 + l, src[l], 9 + l)
         trie(16, 0, 2147483648 + 1)
     }' >"$work/fill"

# ns PART WANT: median of 5 runs of 1,000,000, in ns per run; fails unless
# every run returned WANT (the part took the path it is named for).
ns() {
    local i out
    for i in 1 2 3 4 5; do
        out=$(bpftool prog run pinned "$pins/$1" data_in "$work/frame.bin" repeat 1000000 2>&1)
        grep -q "Return value: $2," <<<"$out" ||
            { echo "classify_costs: $1 did not return $2: $out" >&2; return 1; }
        sed -n 's/.*duration (average): \([0-9]*\)ns.*/\1/p' <<<"$out"
    done | sort -n | sed -n 3p
}

parts=(FLOOR HASH MISS HASH2 ARRAY ARRAY2)
declare -A what=(
    [FLOOR]="read the addresses, count the verdict (the floor)"
    [HASH]="+ one hash probe, found (the destination /64)"
    [MISS]="+ one hash probe, not found"
    [HASH2]="+ destination and block-source probes, both found"
    [ARRAY]="+ the destination as 8 inlined ARRAY lookups"
    [ARRAY2]="+ destination and source, 16 inlined ARRAY lookups"
)
# What each part returns: TC_ACT_SHOT (2) once it finds the block.
declare -A want=([FLOOR]=0 [HASH]=0 [MISS]=0 [HASH2]=2 [ARRAY]=0 [ARRAY2]=2)
declare -A took
for part in "${parts[@]}"; do
    clang-19 -O2 -g -target bpf -I/usr/include/x86_64-linux-gnu "-DCOST_$part" \
        -c "$here/classify_costs.bpf.c" -o "$work/$part.o"
    bpftool prog load "$work/$part.o" "$pins/$part" type classifier pinmaps "$pins/maps-$part"
    sed "s|@MAPS@|$pins/maps-$part|" "$work/fill" >"$work/batch"
    bpftool batch file "$work/batch" >/dev/null
    took[$part]=$(ns "$part" "${want[$part]}")
    [[ -n ${took[$part]} ]] || { echo "classify_costs: no timing from bpftool prog run for $part" >&2; exit 1; }
done

floor=${took[FLOOR]}
echo "classify's slowest path in parts (IPv6 fd60:59::8 -> fd70:27::8; BPF_PROG_TEST_RUN, 1,000,000 runs, median of 5):"
for part in "${parts[@]}"; do
    printf '  %-52s %4d ns  (+%d ns over the floor)\n' "${what[$part]}" "${took[$part]}" $((took[$part] - floor))
done
echo "one hash probe found: $((took[HASH] - floor)) ns, not found: $((took[MISS] - floor)) ns;" \
    "the two probes of the slowest path: $((took[HASH2] - floor)) ns;" \
    "the same two lookups as 16 inlined ARRAY reads: $((took[ARRAY2] - floor)) ns"
