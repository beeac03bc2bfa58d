// SPDX-License-Identifier: (BSD-2-Clause OR GPL-2.0)
/*
 * Per-packet helpers shared by classify.bpf.c and deliver.bpf.c: read the
 * IP addresses, look up blocks and destinations, count verdicts. Policy
 * maps are only read here; mesh_counters is the one map written.
 */
#ifndef VPBLU_MESH_PACKET_H
#define VPBLU_MESH_PACKET_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "mesh_maps.h"

/* Source and destination address of one packet, as on the wire. */
struct ip_addrs {
	__u8 family; /* 4 or 6 */
	__u8 src[16];
	__u8 dst[16];
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
	if (a->family == 4) {
		__u8 *p = data + l3_off + 12;

		if ((void *)(p + 8) <= data_end) {
			__builtin_memcpy(a->src, p, 4);
			__builtin_memcpy(a->dst, p + 4, 4);
			return 1;
		}
	} else {
		__u8 *p = data + l3_off + 8;

		if ((void *)(p + 32) <= data_end) {
			__builtin_memcpy(a->src, p, 16);
			__builtin_memcpy(a->dst, p + 16, 16);
			return 1;
		}
	}
	if (bpf_skb_load_bytes(skb, l3_off + off, a->src, len) < 0)
		return 0;
	if (bpf_skb_load_bytes(skb, l3_off + off + len, a->dst, len) < 0)
		return 0;
	return 1;
}

/* True when a block rule drops src -> dst: source class, then {class, dst}. */
static __always_inline int blocked(const struct ip_addrs *a)
{
	__u32 *class;

	if (a->family == 4) {
		struct lpm_v4_key src = { .prefixlen = 32 };
		struct block_pair_v4_key pair = { .prefixlen = 32 + 32 };

		__builtin_memcpy(src.addr, a->src, 4);
		class = bpf_map_lookup_elem(&mesh_block_src_v4, &src);
		if (!class)
			return 0;
		pair.from_class = *class;
		__builtin_memcpy(pair.dst, a->dst, 4);
		return bpf_map_lookup_elem(&mesh_block_pair_v4, &pair) != NULL;
	}

	struct lpm_v6_key src = { .prefixlen = 128 };
	struct block_pair_v6_key pair = { .prefixlen = 32 + 128 };

	__builtin_memcpy(src.addr, a->src, 16);
	class = bpf_map_lookup_elem(&mesh_block_src_v6, &src);
	if (!class)
		return 0;
	pair.from_class = *class;
	__builtin_memcpy(pair.dst, a->dst, 16);
	return bpf_map_lookup_elem(&mesh_block_pair_v6, &pair) != NULL;
}

/* The mesh_dst entry for the destination, or NULL (not cluster traffic). */
static __always_inline struct dst_entry *lookup_dst(const struct ip_addrs *a)
{
	if (a->family == 4) {
		struct lpm_v4_key key = { .prefixlen = 32 };

		__builtin_memcpy(key.addr, a->dst, 4);
		return bpf_map_lookup_elem(&mesh_dst_v4, &key);
	}

	struct lpm_v6_key key = { .prefixlen = 128 };

	__builtin_memcpy(key.addr, a->dst, 16);
	return bpf_map_lookup_elem(&mesh_dst_v6, &key);
}

#endif /* VPBLU_MESH_PACKET_H */
