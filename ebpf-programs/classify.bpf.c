// SPDX-License-Identifier: (BSD-2-Clause OR GPL-2.0)
/*
 * classify: tc ingress of the host side of each pod veth (Ethernet frames),
 * i.e. before routing. Drops blocked pairs, marks traffic to a peer's CIDR
 * so the fwmark rule routes it into wg-mesh (a mark set at egress would come
 * after routing and steer nothing), and in strict mode drops traffic to
 * cluster CIDRs that have no usable tunnel rather than send it in clear.
 */
#include "mesh_packet.h"

static __always_inline __u32 unreachable_verdict(__u32 reason)
{
	switch (reason) {
	case REASON_NO_KEY:
		return V_DROP_UNREACHABLE_NO_KEY;
	case REASON_NOT_PEERED:
		return V_DROP_UNREACHABLE_NOT_PEERED;
	case REASON_ISOLATED:
		return V_DROP_UNREACHABLE_ISOLATED;
	case REASON_NOT_READY:
		return V_DROP_UNREACHABLE_NOT_READY;
	case REASON_DRAINED:
		return V_DROP_UNREACHABLE_DRAINED;
	default:
		return V_DROP_UNREACHABLE_OTHER;
	}
}

SEC("classifier")
int classify(struct __sk_buff *skb)
{
	struct ip_addrs a = {};
	struct dst_value *v;
	struct mesh_config *cfg;
	__u32 zero = 0;

	if (!load_addrs(skb, ETH_HLEN, &a)) {
		count(V_PASS_NOT_IP);
		return TC_ACT_OK;
	}
	v = lookup_dst(&a);
	if (blocked(&a, v)) {
		count(V_DROP_BLOCKED);
		return TC_ACT_SHOT;
	}
	if (!v || v->dst.kind == DST_NONE) {
		count(V_PASS_LOCAL);
		return TC_ACT_OK;
	}
	cfg = bpf_map_lookup_elem(&mesh_config, &zero);
	if (!cfg) /* an ARRAY slot always exists; this satisfies the verifier */
		return TC_ACT_OK;
	if (v->dst.kind == DST_PEER) {
		skb->mark = cfg->mesh_mark;
		count(V_TO_MESH);
		return TC_ACT_OK;
	}
	if (v->dst.kind == DST_UNREACHABLE) {
		if (cfg->strict) {
			count(unreachable_verdict(v->dst.reason));
			return TC_ACT_SHOT;
		}
		count(V_PASS_UNREACHABLE);
		return TC_ACT_OK;
	}
	/* An unknown kind is written by a newer daemon: no opinion. */
	count(V_PASS_LOCAL);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
