// SPDX-License-Identifier: (BSD-2-Clause OR GPL-2.0)
/*
 * Per-packet helpers shared by classify.bpf.c and deliver.bpf.c: read the
 * IP addresses, look up the destination (a hash probe per prefix length,
 * or one trie walk) and its block sources (hash probes, only when a block
 * rule can match), count verdicts.
 * Policy maps are only read here; mesh_counters is the one map written.
 */
#ifndef VPBLU_MESH_PACKET_H
#define VPBLU_MESH_PACKET_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "mesh_maps.h"

/*
 * Source and destination address of one packet, as on the wire (an IPv4
 * address in word 0). Words, not bytes: copies and masks are whole loads
 * and stores rather than one instruction per byte.
 */
struct ip_addrs {
	__u32 src[4];
	__u32 dst[4];
	__u8 family; /* 4 or 6 */
};

static __always_inline void count(__u32 verdict)
{
	__u64 *counter = bpf_map_lookup_elem(&mesh_counters, &verdict);

	/* Per-CPU slot: no other writer, no atomic needed. */
	if (counter)
		*counter += 1;
}

/*
 * Reads the addresses of the IP header at l3_off. The family comes from
 * skb->protocol, which both Ethernet (veth) and L3 (WireGuard, TUN) devices
 * set. Returns 0 when the packet is not IP or too short to hold the header.
 * Reads the linear head directly when the addresses are in it (the common
 * case); bpf_skb_load_bytes copes with a non-linear skb otherwise.
 */
static __always_inline int load_addrs(struct __sk_buff *skb, __u32 l3_off, struct ip_addrs *a)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u32 off, len;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		a->family = 4;
		off = 12; /* saddr at 12, daddr at 16 */
		len = 4;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		a->family = 6;
		off = 8; /* saddr at 8, daddr at 24 */
		len = 16;
	} else {
		return 0;
	}

	if (l3_off > 64) /* bounds the offset for the verifier */
		return 0;
	/*
	 * Word loads from the packet: the addresses are only 2-byte aligned
	 * behind an Ethernet header, which the verifier allows wherever
	 * unaligned access is efficient (x86-64, arm64).
	 */
	if (a->family == 4) {
		const __u32 *p = data + l3_off + 12;

		if ((void *)(p + 2) <= data_end) {
			a->src[0] = p[0];
			a->dst[0] = p[1];
			return 1;
		}
	} else {
		const __u32 *p = data + l3_off + 8;

		if ((void *)(p + 8) <= data_end) {
			a->src[0] = p[0];
			a->src[1] = p[1];
			a->src[2] = p[2];
			a->src[3] = p[3];
			a->dst[0] = p[4];
			a->dst[1] = p[5];
			a->dst[2] = p[6];
			a->dst[3] = p[7];
			return 1;
		}
	}
	if (bpf_skb_load_bytes(skb, l3_off + off, a->src, len) < 0)
		return 0;
	if (bpf_skb_load_bytes(skb, l3_off + off + len, a->dst, len) < 0)
		return 0;
	return 1;
}

/* The network-byte-order mask of the first `bits` (clamped to 0..32) bits of a word. */
static __always_inline __u32 word_mask(__s32 bits)
{
	if (bits <= 0)
		return 0;
	if (bits >= 32)
		return 0xffffffff;
	return bpf_htonl(~0U << (32 - bits));
}

/* The v6 address `a` with all but its first `len` bits zero, as four words. */
static __always_inline void mask_v6(__u32 *out, const __u32 *a, __u32 len)
{
	out[0] = a[0] & word_mask((__s32)len);
	out[1] = a[1] & word_mask((__s32)len - 32);
	out[2] = a[2] & word_mask((__s32)len - 64);
	out[3] = a[3] & word_mask((__s32)len - 96);
}

/*
 * The mesh_dst entry for the destination: NULL when no mesh destination
 * and no block rule's `to` contains it. One hash probe per length listed
 * in mesh_dst_lens (longest first, the first hit is the longest match), or
 * one trie walk when the table has more lengths than that list holds.
 */
static __always_inline struct dst_value *lookup_dst(const struct ip_addrs *a)
{
	struct dst_value *v;
	struct dst_lens *lens;
	__u32 zero = 0, i, n;

	lens = bpf_map_lookup_elem(&mesh_dst_lens, &zero);
	if (a->family == 4) {
		struct lpm_v4_key key = { .prefixlen = 32 };
		__u32 masked;

		n = lens ? lens->nlens_v4 : 0;
		if (n == 0 || n > MESH_DST_LENS) {
			__builtin_memcpy(key.addr, a->dst, 4);
			return bpf_map_lookup_elem(&mesh_dst_v4, &key);
		}
		/* The constant bound is what the verifier checks the index by. */
		for (i = 0; i < MESH_DST_LENS; i++) {
			if (i >= n)
				break;
			key.prefixlen = lens->lens_v4[i];
			masked = a->dst[0] & word_mask(key.prefixlen);
			__builtin_memcpy(key.addr, &masked, 4);
			v = bpf_map_lookup_elem(&mesh_dst_hash_v4, &key);
			if (v)
				return v;
		}
		return NULL;
	}

	struct lpm_v6_key key = { .prefixlen = 128 };
	__u32 masked[4];

	n = lens ? lens->nlens_v6 : 0;
	if (n == 0 || n > MESH_DST_LENS) {
		__builtin_memcpy(key.addr, a->dst, 16);
		return bpf_map_lookup_elem(&mesh_dst_v6, &key);
	}
	for (i = 0; i < MESH_DST_LENS; i++) {
		if (i >= n)
			break;
		key.prefixlen = lens->lens_v6[i];
		mask_v6(masked, a->dst, key.prefixlen);
		__builtin_memcpy(key.addr, masked, 16);
		v = bpf_map_lookup_elem(&mesh_dst_hash_v6, &key);
		if (v)
			return v;
	}
	return NULL;
}

/* True when {class, the source's first `len` bits} is a block source. */
static __always_inline int block_from_v4(__u32 class, __u32 src, __u32 len)
{
	struct block_from_v4_key key = { .block_class = class, .prefixlen = len };
	__u32 masked = src & word_mask(len);

	__builtin_memcpy(key.src, &masked, 4);
	return bpf_map_lookup_elem(&mesh_block_from_v4, &key) != NULL;
}

static __always_inline int block_from_v6(__u32 class, const __u32 *src, __u32 len)
{
	struct block_from_v6_key key = { .block_class = class, .prefixlen = len };
	__u32 masked[4];

	mask_v6(masked, src, len);
	__builtin_memcpy(key.src, masked, 16);
	return bpf_map_lookup_elem(&mesh_block_from_v6, &key) != NULL;
}

/*
 * True when a block rule drops src -> dst. `dst` is the destination's
 * entry (lookup_dst); without a block class no rule can match and there is
 * nothing more to look up. Otherwise one hash probe per source prefix
 * length the class uses: a hit at any length is a rule.
 */
static __always_inline int blocked(const struct ip_addrs *a, const struct dst_value *dst)
{
	__u32 class, n, i, len;

	if (!dst || !dst->block_class)
		return 0;
	class = dst->block_class;
	n = dst->block_nlens;

	if (a->family == 4) {
		__u32 src = a->src[0];

		if (n == MESH_BLOCK_LENS_ALL) {
#pragma clang loop unroll(disable)
			for (len = 0; len <= 32; len++)
				if (block_from_v4(class, src, len))
					return 1;
			return 0;
		}
		for (i = 0; i < MESH_BLOCK_LENS && i < n; i++)
			if (block_from_v4(class, src, dst->block_lens[i]))
				return 1;
		return 0;
	}

	if (n == MESH_BLOCK_LENS_ALL) {
#pragma clang loop unroll(disable)
		for (len = 0; len <= 128; len++)
			if (block_from_v6(class, a->src, len))
				return 1;
		return 0;
	}
	for (i = 0; i < MESH_BLOCK_LENS && i < n; i++)
		if (block_from_v6(class, a->src, dst->block_lens[i]))
			return 1;
	return 0;
}

#endif /* VPBLU_MESH_PACKET_H */
