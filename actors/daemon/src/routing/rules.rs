//! The fwmark rules: `fwmark MARK/MASK lookup TABLE pref PRIORITY proto 86`,
//! one for IPv4 and one for IPv6.

use futures::TryStreamExt;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::route::RouteProtocol;
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use rtnetlink::{Handle, IpVersion, RuleAddRequest};
use rustix::io::Errno;

use super::diff::{InstalledRule, RuleSpec, plan_rules};
use super::error::is_errno;
use super::{Change, RoutingError};

const FAMILIES: [IpVersion; 2] = [IpVersion::V4, IpVersion::V6];

pub(crate) async fn ensure(handle: &Handle, spec: &RuleSpec) -> Result<Change, RoutingError> {
    let mut changed = false;
    for family in FAMILIES {
        let Some(installed) = dump(handle, family.clone(), spec).await? else { continue };
        let plan = plan_rules(&installed.iter().map(|(rule, _)| rule.clone()).collect::<Vec<_>>(), spec);
        for &index in &plan.remove {
            delete(handle, &installed[index].1, spec).await?;
            changed = true;
        }
        if plan.add {
            add(handle, family, spec).await?;
            changed = true;
        }
    }
    Ok(Change::from_bool(changed))
}

pub(crate) async fn remove_ours(handle: &Handle, spec: &RuleSpec) -> Result<usize, RoutingError> {
    let mut removed = 0;
    for family in FAMILIES {
        for (rule, message) in dump(handle, family, spec).await?.into_iter().flatten() {
            if rule.protocol == Some(spec.protocol) {
                delete(handle, &message, spec).await?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

async fn add(handle: &Handle, family: IpVersion, spec: &RuleSpec) -> Result<(), RoutingError> {
    let request = handle
        .rule()
        .add()
        .action(RuleAction::ToTable)
        .table_id(spec.table)
        .priority(spec.priority)
        .fw_mark(spec.fwmark);
    let result = match family {
        IpVersion::V4 => finish_and_send(request.v4(), spec).await,
        IpVersion::V6 => finish_and_send(request.v6(), spec).await,
    };
    result.map_err(|e| RoutingError::netlink(format!("add {} {}", name(&family), show(spec)), e))
}

/// Adds the mask and our protocol (the builder has no setters for them).
async fn finish_and_send<T>(mut request: RuleAddRequest<T>, spec: &RuleSpec) -> Result<(), rtnetlink::Error> {
    let attributes = &mut request.message_mut().attributes;
    attributes.push(RuleAttribute::FwMask(spec.fwmask));
    attributes.push(RuleAttribute::Protocol(RouteProtocol::from(spec.protocol)));
    request.execute().await
}

async fn delete(handle: &Handle, message: &RuleMessage, spec: &RuleSpec) -> Result<(), RoutingError> {
    let family = message.header.family;
    match handle.rule().del(message.clone()).execute().await {
        Ok(()) => Ok(()),
        // Someone removed it between our dump and now: the goal is reached.
        Err(e) if is_errno(&e, Errno::NOENT) => Ok(()),
        Err(e) => Err(RoutingError::netlink(
            format!(
                "delete {} rule pref {} of ours ({})",
                family_name(family),
                priority(message),
                show(spec)
            ),
            e,
        )),
    }
}

/// Every rule of one family, with what the plan needs to know about it;
/// `None` when the kernel has no such family (IPv6 disabled at boot).
async fn dump(
    handle: &Handle,
    family: IpVersion,
    spec: &RuleSpec,
) -> Result<Option<Vec<(InstalledRule, RuleMessage)>>, RoutingError> {
    let name = name(&family);
    let wanted = match family {
        IpVersion::V4 => AddressFamily::Inet,
        IpVersion::V6 => AddressFamily::Inet6,
    };
    let messages: Vec<RuleMessage> = match handle.rule().get(family).execute().try_collect().await {
        Ok(messages) => messages,
        Err(e) if is_errno(&e, Errno::AFNOSUPPORT) => return Ok(None),
        Err(e) => {
            return Err(RoutingError::netlink(format!("list {name} rules (looking for {})", show(spec)), e));
        }
    };
    Ok(Some(messages.into_iter().filter(|m| m.header.family == wanted).map(|m| (installed(&m), m)).collect()))
}

/// What a dumped rule selects and does.
pub(crate) fn installed(message: &RuleMessage) -> InstalledRule {
    let header = &message.header;
    let mut rule = InstalledRule {
        priority: 0,
        fwmark: None,
        fwmask: None,
        table: u32::from(header.table),
        to_table: header.action == RuleAction::ToTable,
        protocol: None,
        other_selectors: header.src_len != 0
            || header.dst_len != 0
            || header.tos != 0
            || !header.flags.is_empty(),
    };
    for attribute in &message.attributes {
        match attribute {
            RuleAttribute::Priority(p) => rule.priority = *p,
            RuleAttribute::FwMark(m) => rule.fwmark = Some(*m),
            RuleAttribute::FwMask(m) => rule.fwmask = Some(*m),
            RuleAttribute::Table(t) => rule.table = *t,
            RuleAttribute::Protocol(p) => rule.protocol = Some(u8::from(*p)),
            // The kernel reports these as -1 when unset.
            RuleAttribute::SuppressIfGroup(u32::MAX) | RuleAttribute::SuppressPrefixLen(u32::MAX) => {}
            RuleAttribute::Destination(_)
            | RuleAttribute::Source(_)
            | RuleAttribute::Iifname(_)
            | RuleAttribute::Oifname(_)
            | RuleAttribute::Goto(_)
            | RuleAttribute::Realm(_)
            | RuleAttribute::TunId(_)
            | RuleAttribute::SuppressIfGroup(_)
            | RuleAttribute::SuppressPrefixLen(_)
            | RuleAttribute::UidRange(_)
            | RuleAttribute::IpProtocol(_)
            | RuleAttribute::SourcePortRange(_)
            | RuleAttribute::DestinationPortRange(_)
            | RuleAttribute::L3MDev(true) => rule.other_selectors = true,
            // Attributes this crate does not parse (newer kernels report more,
            // only when set) are ignored rather than making our own rule look
            // foreign, which would re-add it on every call.
            _ => {}
        }
    }
    rule
}

fn priority(message: &RuleMessage) -> u32 {
    installed(message).priority
}

fn name(family: &IpVersion) -> &'static str {
    match family {
        IpVersion::V4 => "IPv4",
        IpVersion::V6 => "IPv6",
    }
}

fn family_name(family: AddressFamily) -> &'static str {
    if family == AddressFamily::Inet6 { "IPv6" } else { "IPv4" }
}

fn show(spec: &RuleSpec) -> String {
    format!("rule fwmark {:#x}/{:#x} lookup {} pref {}", spec.fwmark, spec.fwmask, spec.table, spec.priority)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What kernel 6.18 dumps for `ip rule add fwmark 0x56500000/0xffff0000
    /// lookup 22096 pref 22096 proto 86`.
    fn dumped(extra: Option<RuleAttribute>) -> RuleMessage {
        let mut message = RuleMessage::default();
        message.header.family = AddressFamily::Inet;
        message.header.table = 252;
        message.header.action = RuleAction::ToTable;
        message.attributes = vec![
            RuleAttribute::Table(22096),
            RuleAttribute::SuppressPrefixLen(u32::MAX),
            RuleAttribute::Protocol(RouteProtocol::from(0x56)),
            RuleAttribute::Priority(22096),
            RuleAttribute::FwMark(0x5650_0000),
            RuleAttribute::FwMask(0xffff_0000),
        ];
        message.attributes.extend(extra);
        message
    }

    #[test]
    fn kernel_dump_of_our_rule_reads_as_exactly_ours() {
        assert_eq!(
            installed(&dumped(None)),
            InstalledRule {
                priority: 22096,
                fwmark: Some(0x5650_0000),
                fwmask: Some(0xffff_0000),
                table: 22096,
                to_table: true,
                protocol: Some(0x56),
                other_selectors: false,
            }
        );
    }

    #[test]
    fn set_selectors_make_it_another_rule() {
        for extra in [
            RuleAttribute::SuppressPrefixLen(0),
            RuleAttribute::Iifname("eth0".into()),
            RuleAttribute::Source("10.0.0.0".parse().unwrap()),
        ] {
            assert!(installed(&dumped(Some(extra.clone()))).other_selectors, "{extra:?}");
        }
    }
}
