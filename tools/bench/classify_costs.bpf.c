// SPDX-License-Identifier: (BSD-2-Clause OR GPL-2.0)
/*
 * What classify's slowest path is made of, one part at a time: built by
 * tools/bench/classify_costs.sh once per COST (a -D value), loaded with its
 * own unpinned maps and timed with BPF_PROG_TEST_RUN on an IPv6 frame from
 * fd60:59::8 to fd70:27::8 (classify's "blocked pair" path). Not a data
 * plane program: nothing here is loaded by the daemon.
 *
 *   COST_FLOOR   read the addresses, count a verdict (classify's fixed part)
 *   COST_HASH    + one hash probe for the destination /64 (found)
 *   COST_MISS    + one hash probe that finds nothing
 *   COST_HASH2   + the destination probe and the block-source probe, both
 *                found: the two probes classify's slowest path makes
 *   COST_ARRAY   + the destination /64 walked as 8 levels of a 256-way
 *                table in an ARRAY map (the verifier inlines those lookups)
 *   COST_ARRAY2  + the destination and the source, 16 levels in all
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
/* The data plane's maps, unpinned: these must never meet a daemon's. */
#define LIBBPF_PIN_BY_NAME LIBBPF_PIN_NONE
#include "../../ebpf-programs/mesh_packet.h"

#define LEAF 0x80000000u
#define TRIE_NODES 64

struct cost_block_key {
	__u32 block_class;
	__u32 prefixlen;
	__u8 src[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_v6_key);
	__type(value, struct dst_value);
} cost_dst SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct cost_block_key);
	__type(value, __u8);
} cost_block SEC(".maps");

/* Node n's slot for byte b at n * 256 + b: a child node, or LEAF | value. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TRIE_NODES * 256);
	__type(key, __u32);
	__type(value, __u32);
} cost_trie SEC(".maps");

static __always_inline __u32 walk(__u32 node, const __u32 *addr)
{
	const __u8 *bytes = (const __u8 *)addr;
	__u32 i;

	for (i = 0; i < 8; i++) {
		__u32 idx = node * 256 + bytes[i];
		__u32 *slot = bpf_map_lookup_elem(&cost_trie, &idx);

		if (!slot)
			return 0;
		if (*slot & LEAF)
			return *slot;
		node = *slot;
		if (!node || node >= TRIE_NODES)
			return 0;
	}
	return 0;
}

SEC("classifier")
int classify_cost(struct __sk_buff *skb)
{
	struct ip_addrs a = {};

	if (!load_addrs(skb, ETH_HLEN, &a) || a.family != 6) {
		count(V_PASS_NOT_IP);
		return TC_ACT_OK;
	}
#if defined(COST_HASH) || defined(COST_MISS) || defined(COST_HASH2)
	struct lpm_v6_key key = { .prefixlen = 64 };
	struct dst_value *v;
	__u32 masked[4];

	mask_v6(masked, a.dst, 64);
#ifdef COST_MISS
	masked[0] ^= 0xffff; /* no entry has this prefix */
#endif
	__builtin_memcpy(key.addr, masked, 16);
	v = bpf_map_lookup_elem(&cost_dst, &key);
	if (!v) {
		count(V_PASS_LOCAL);
		return TC_ACT_OK;
	}
#ifdef COST_HASH2
	struct cost_block_key bkey = { .block_class = v->block_class, .prefixlen = 64 };

	mask_v6(masked, a.src, 64);
	__builtin_memcpy(bkey.src, masked, 16);
	if (bpf_map_lookup_elem(&cost_block, &bkey)) {
		count(V_DROP_BLOCKED);
		return TC_ACT_SHOT;
	}
#endif
#endif
#if defined(COST_ARRAY) || defined(COST_ARRAY2)
	__u32 dst = walk(1, a.dst);

	if (!dst) {
		count(V_PASS_LOCAL);
		return TC_ACT_OK;
	}
#ifdef COST_ARRAY2
	/* The block sources of the destination's class: a tree of their own. */
	if (walk(dst & 0xff, a.src)) {
		count(V_DROP_BLOCKED);
		return TC_ACT_SHOT;
	}
#endif
#endif
	count(V_TO_MESH);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
