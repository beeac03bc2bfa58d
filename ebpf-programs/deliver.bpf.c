// SPDX-License-Identifier: (BSD-2-Clause OR GPL-2.0)
/*
 * deliver: tc ingress of wg-mesh, after decryption. wg-mesh is an L3 device
 * (kernel WireGuard or a TUN for userspace WireGuard): the IP header is at
 * offset 0, no Ethernet header, and skb->protocol says v4 or v6. Enforces
 * blocks on the receiving side too, so a sender that ignores them (or an
 * older policy on the sender) cannot get through.
 */
#include "mesh_packet.h"

SEC("classifier")
int deliver(struct __sk_buff *skb)
{
	struct ip_addrs a = {};

	if (!load_addrs(skb, 0, &a)) {
		count(V_DELIVER_PASS_NOT_IP);
		return TC_ACT_OK;
	}
	if (blocked(&a, lookup_dst(&a))) {
		count(V_DELIVER_DROP_BLOCKED);
		return TC_ACT_SHOT;
	}
	count(V_DELIVER_PASS);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
