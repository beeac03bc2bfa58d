// SPDX-License-Identifier: (BSD-2-Clause OR GPL-2.0)
/*
 * The map layout shared by classify.bpf.c and deliver.bpf.c, and mirrored
 * field for field by actors/daemon/src/bpf/layout.rs. Every map is pinned
 * by name under the daemon's bpffs directory, so both programs (and every
 * restart of the daemon) open the same maps.
 *
 * Changing a struct, a size or a max_entries here changes the pinned maps'
 * shape: the daemon refuses to reuse a pin whose shape differs (see
 * layout.rs), so bump layout.rs in the same commit.
 */
#ifndef VPBLU_MESH_MAPS_H
#define VPBLU_MESH_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define MESH_DST_MAX_ENTRIES 65536
#define MESH_BLOCK_FROM_MAX_ENTRIES 262144
/*
 * Destination prefix lengths the hash copy of the destination table is
 * probed at. A hash probe costs about a quarter of a trie walk, so past
 * this many lengths the trie is the faster one.
 */
#define MESH_DST_LENS 4
/* Source prefix lengths a destination entry lists for its block class. */
#define MESH_BLOCK_LENS 8
/* block_nlens when a class has more lengths than fit: probe every length. */
#define MESH_BLOCK_LENS_ALL 0xff
/* Room for verdicts added later without reshaping the pinned map. */
#define MESH_COUNTERS_MAX_ENTRIES 32

/* LPM trie key for one address family: prefixlen counts bits of addr. */
struct lpm_v4_key {
	__u32 prefixlen;
	__u8 addr[4];
};

struct lpm_v6_key {
	__u32 prefixlen;
	__u8 addr[16];
};

enum dst_kind {
	DST_NONE = 0,        /* no mesh destination contains it (a block destination only) */
	DST_PEER = 1,        /* routed into the mesh: mark it */
	DST_UNREACHABLE = 2, /* cluster CIDR with no usable tunnel */
};

enum unreachable_reason {
	REASON_NO_KEY = 1,
	REASON_NOT_PEERED = 2,
	REASON_ISOLATED = 3,
	REASON_NOT_READY = 4,
	REASON_DRAINED = 5,
};

/* What the longest mesh destination containing an address says. */
struct dst_entry {
	__u32 kind;   /* enum dst_kind */
	__u32 reason; /* enum unreachable_reason when kind == DST_UNREACHABLE, else 0 */
};

/* dst_value.flags: why the prefix is in the trie (userspace reads them back). */
#define DST_F_MESH 1  /* it is itself a mesh destination */
#define DST_F_BLOCK 2 /* it is itself a block rule's `to` CIDR */

/*
 * One trie walk per packet: mesh_dst_* holds every mesh destination and
 * every block `to` CIDR, each entry flattened in userspace so that the
 * longest match for a destination address carries both answers:
 * - dst: the longest mesh destination containing it (kind DST_NONE if none);
 * - block_class: the class of the longest block `to` containing it (0: no
 *   block rule can match this destination, so no block lookup at all).
 *   A class stands for every rule whose `to` contains that CIDR; its
 *   sources are in mesh_block_from_*, and block_lens lists their distinct
 *   prefix lengths so the program probes only those.
 */
struct dst_value {
	struct dst_entry dst;
	__u32 block_class;
	__u8 flags;       /* DST_F_* */
	__u8 block_nlens; /* entries used in block_lens, or MESH_BLOCK_LENS_ALL */
	__u8 block_lens[MESH_BLOCK_LENS];
	__u8 pad[2];
};

/*
 * mesh_dst_hash_* hold exactly the entries of mesh_dst_* (same keys, host
 * bits zero, same values) in hash maps. When a family's table uses at most
 * MESH_DST_LENS distinct prefix lengths, mesh_dst_lens lists them longest
 * first and the programs probe the hash once per length: the first hit is
 * the longest match, the entry the trie walk would find. nlens 0 (more
 * lengths, no entries, or a map not yet written by this build: a fresh
 * array is zero) means walk the trie.
 */
struct dst_lens {
	__u8 nlens_v4;
	__u8 nlens_v6;
	__u8 pad[2];
	__u8 lens_v4[MESH_DST_LENS];
	__u8 lens_v6[MESH_DST_LENS];
};

/*
 * A block source: present = {class, source CIDR} drops. Hash keys, probed
 * once per length in the destination's block_lens with the source address
 * masked to that length. block_class is in host byte order, src in network
 * byte order with the host bits zero.
 */
struct block_from_v4_key {
	__u32 block_class;
	__u32 prefixlen;
	__u8 src[4];
};

struct block_from_v6_key {
	__u32 block_class;
	__u32 prefixlen;
	__u8 src[16];
};

struct mesh_config {
	__u32 mesh_mark; /* skb->mark for packets routed into the mesh */
	__u32 strict;    /* 1: drop traffic to unreachable cluster CIDRs */
};

/* Index into mesh_counters. Append only: userspace names them by number. */
enum verdict {
	V_PASS_NOT_IP = 0,               /* classify: not IPv4/IPv6, or headers unreadable */
	V_PASS_LOCAL = 1,                /* classify: destination not in a mesh destination */
	V_TO_MESH = 2,                   /* classify: PEER, marked */
	V_DROP_BLOCKED = 3,              /* classify: block rule */
	V_DROP_UNREACHABLE_NO_KEY = 4,   /* classify, strict: reason NoKey */
	V_DROP_UNREACHABLE_NOT_PEERED = 5,
	V_DROP_UNREACHABLE_ISOLATED = 6,
	V_DROP_UNREACHABLE_NOT_READY = 7,
	V_DROP_UNREACHABLE_DRAINED = 8,
	V_DROP_UNREACHABLE_OTHER = 9,    /* classify, strict: reason code unknown */
	V_PASS_UNREACHABLE = 10,         /* classify, not strict: unreachable but passed */
	V_DELIVER_PASS = 11,             /* deliver: not blocked */
	V_DELIVER_DROP_BLOCKED = 12,     /* deliver: block rule */
	V_DELIVER_PASS_NOT_IP = 13,      /* deliver: not IPv4/IPv6, or headers unreadable */
	V_MAX = 14,
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MESH_DST_MAX_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__type(key, struct lpm_v4_key);
	__type(value, struct dst_value);
} mesh_dst_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MESH_DST_MAX_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__type(key, struct lpm_v6_key);
	__type(value, struct dst_value);
} mesh_dst_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MESH_DST_MAX_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__type(key, struct lpm_v4_key);
	__type(value, struct dst_value);
} mesh_dst_hash_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MESH_DST_MAX_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__type(key, struct lpm_v6_key);
	__type(value, struct dst_value);
} mesh_dst_hash_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__type(key, __u32);
	__type(value, struct dst_lens);
} mesh_dst_lens SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MESH_BLOCK_FROM_MAX_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__type(key, struct block_from_v4_key);
	__type(value, __u8); /* present = drop */
} mesh_block_from_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MESH_BLOCK_FROM_MAX_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__type(key, struct block_from_v6_key);
	__type(value, __u8); /* present = drop */
} mesh_block_from_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__type(key, __u32);
	__type(value, struct mesh_config);
} mesh_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MESH_COUNTERS_MAX_ENTRIES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__type(key, __u32);
	__type(value, __u64);
} mesh_counters SEC(".maps");

#endif /* VPBLU_MESH_MAPS_H */
