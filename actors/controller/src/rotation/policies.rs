//! What the scheduler makes of the RotationPolicies (pure): which parse,
//! which nodes each one owns, and the conditions that say so.
//!
//! - A schedule that does not parse → `Invalid=True` (`InvalidSchedule`);
//!   a selector that does not → `Invalid=True` (`InvalidSelector`); either
//!   makes `Ready=False` with the same reason, and the policy rotates
//!   nothing. The controller keeps running.
//! - A node selected by several valid policies belongs to the first by
//!   name; each other one gets `Conflict=True` (`OverlappingSelector`)
//!   naming the node and the owner, and does not rotate it.
//! - A valid policy that owns no node is `Ready=True` with reason
//!   `NoNodes`: nothing is wrong with its spec, there is just nothing to
//!   rotate (yet).
//! - `Rotating` is `True` (`RotationInProgress`) while one of its nodes
//!   rotates, else `False` (`Idle`).

use std::collections::{BTreeMap, BTreeSet};

use kube::ResourceExt;
use vpblu_k8s::RotationPolicy;
use vpblu_k8s::conditions::{CONFLICT, INVALID, READY, ROTATING, reasons};
use vpblu_messages::{NodeName, RotationPhase};

use super::schedule::Schedule;
use super::selector::Selector;
pub use crate::decided::Decided;
use crate::decided::fit_message;

/// A Node as the scheduler selects it. The labels are borrowed from the
/// cached Node: a pass runs every few seconds over every Node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeLabels<'n> {
    /// Its name.
    pub name: NodeName,
    /// Its labels.
    pub labels: &'n BTreeMap<String, String>,
}

/// One policy, judged.
#[derive(Clone, Debug)]
pub struct Judged<'a> {
    /// The policy.
    pub policy: &'a RotationPolicy,
    /// Its parsed schedule, when valid.
    pub schedule: Option<Schedule>,
    /// Why it cannot be used: (reason, message), schedule first.
    pub problems: Vec<(&'static str, String)>,
    /// The nodes it rotates, in name order.
    pub owned: Vec<NodeName>,
    /// Nodes it selects that an earlier policy owns: (node, owner).
    pub lost: Vec<(NodeName, String)>,
}

impl Judged<'_> {
    /// The policy's name.
    pub fn name(&self) -> String {
        self.policy.name_any()
    }

    /// Whether it can run at all.
    pub fn valid(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Judges every policy against `nodes`; the result is in name order.
pub fn judge<'a>(policies: &'a [RotationPolicy], nodes: &[NodeLabels<'_>]) -> Vec<Judged<'a>> {
    let mut sorted: Vec<&RotationPolicy> = policies.iter().collect();
    sorted.sort_by_key(|p| p.name_any());
    let mut owners: BTreeMap<&NodeName, String> = BTreeMap::new();
    let mut out = Vec::with_capacity(sorted.len());
    for policy in sorted {
        let mut problems = Vec::new();
        let schedule = match Schedule::parse(&policy.spec.schedule) {
            Ok(schedule) => Some(schedule),
            Err(e) => {
                problems.push((reasons::INVALID_SCHEDULE, format!("spec.schedule: {e}")));
                None
            }
        };
        let selector = match Selector::parse(policy.spec.node_selector.as_ref()) {
            Ok(selector) => Some(selector),
            Err(e) => {
                problems.push((reasons::INVALID_SELECTOR, e.to_string()));
                None
            }
        };
        let (mut owned, mut lost) = (Vec::new(), Vec::new());
        if let (Some(selector), true) = (selector, problems.is_empty()) {
            for node in nodes.iter().filter(|n| selector.matches(n.labels)) {
                match owners.get(&node.name) {
                    Some(owner) => lost.push((node.name.clone(), owner.clone())),
                    None => {
                        owners.insert(&node.name, policy.name_any());
                        owned.push(node.name.clone());
                    }
                }
            }
        }
        owned.sort();
        lost.sort();
        out.push(Judged { policy, schedule, problems, owned, lost });
    }
    out
}

/// The valid policy that owns `node`, if any.
pub fn owner_of<'j, 'a>(judged: &'j [Judged<'a>], node: &NodeName) -> Option<&'j Judged<'a>> {
    judged.iter().find(|j| j.owned.binary_search(node).is_ok())
}

/// Whether `d` says something is wrong (worth a Warning Event when it
/// newly holds).
pub fn is_warning(d: &Decided) -> bool {
    d.status && matches!(d.type_, INVALID | CONFLICT)
}

/// The conditions of `judged`, which has `rotating` (node, phase) under
/// way if one of its nodes rotates now.
pub fn conditions(judged: &Judged<'_>, rotating: Option<(&NodeName, RotationPhase)>) -> Vec<Decided> {
    let invalid = match judged.problems.first() {
        Some((reason, _)) => Decided {
            type_: INVALID,
            status: true,
            reason: (*reason).into(),
            message: fit_message(
                judged.problems.iter().map(|(_, m)| m.as_str()).collect::<Vec<_>>().join("; "),
            ),
        },
        None => {
            Decided { type_: INVALID, status: false, reason: reasons::VALID.into(), message: String::new() }
        }
    };
    let ready = ready_condition(judged, &invalid);
    let conflict = conflict_condition(judged);
    let rotating = match rotating {
        Some((node, phase)) => Decided {
            type_: ROTATING,
            status: true,
            reason: reasons::ROTATION_IN_PROGRESS.into(),
            message: format!("rotating the key of node {node}: phase {phase}"),
        },
        None => Decided {
            type_: ROTATING,
            status: false,
            reason: reasons::IDLE.into(),
            message: "no rotation of this policy is running".to_owned(),
        },
    };
    vec![ready, invalid, conflict, rotating]
}

/// Ready: whether the policy would rotate anything, and what.
fn ready_condition(judged: &Judged<'_>, invalid: &Decided) -> Decided {
    if invalid.status {
        Decided { type_: READY, status: false, ..invalid.clone() }
    } else if judged.owned.is_empty() {
        let message = if judged.lost.is_empty() {
            "the node selector matches no node, so a run rotates nothing; check spec.nodeSelector against \
             the Nodes' labels"
                .to_owned()
        } else {
            "every node the selector matches belongs to another RotationPolicy (see the Conflict condition), \
             so a run rotates nothing"
                .to_owned()
        };
        Decided { type_: READY, status: true, reason: reasons::NO_NODES.into(), message }
    } else {
        let reason = if judged.policy.spec.paused { reasons::PAUSED } else { reasons::SCHEDULED };
        let names: Vec<&str> = judged.owned.iter().map(NodeName::as_str).collect();
        let message = fit_message(format!(
            "rotates {} node(s) ({}) on schedule {:?}{}",
            names.len(),
            names.join(", "),
            judged.policy.spec.schedule,
            if judged.policy.spec.paused { "; paused: only vpblu.dev/rotate-now starts a run" } else { "" }
        ));
        Decided { type_: READY, status: true, reason: reason.into(), message }
    }
}

/// Conflict: the nodes another policy owns although this one selects them.
fn conflict_condition(judged: &Judged<'_>) -> Decided {
    if judged.lost.is_empty() {
        Decided {
            type_: CONFLICT,
            status: false,
            reason: reasons::NO_CONFLICT.into(),
            message: String::new(),
        }
    } else {
        let owners: BTreeSet<&str> = judged.lost.iter().map(|(_, o)| o.as_str()).collect();
        let lost = judged
            .lost
            .iter()
            .map(|(node, owner)| format!("node {node} is also selected by RotationPolicy {owner:?}"))
            .collect::<Vec<_>>()
            .join("; ");
        Decided {
            type_: CONFLICT,
            status: true,
            reason: reasons::OVERLAPPING_SELECTOR.into(),
            message: fit_message(format!(
                "{lost}; the first policy by name owns a node, so this policy does not rotate it (narrow \
                 spec.nodeSelector here or in {})",
                owners.into_iter().map(|o| format!("{o:?}")).collect::<Vec<_>>().join(", ")
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
    use vpblu_k8s::RotationPolicySpec;

    use super::*;

    fn policy(name: &str, schedule: &str, selector: Option<LabelSelector>) -> RotationPolicy {
        RotationPolicy::new(
            name,
            RotationPolicySpec {
                schedule: schedule.into(),
                node_selector: selector,
                ..RotationPolicySpec::default()
            },
        )
    }

    fn zone(zone: &str) -> Option<LabelSelector> {
        Some(LabelSelector {
            match_labels: Some(BTreeMap::from([("zone".to_owned(), zone.to_owned())])),
            ..LabelSelector::default()
        })
    }

    /// Three nodes, two in zone a, one in zone b.
    fn cluster() -> Vec<(NodeName, BTreeMap<String, String>)> {
        [("n1", "a"), ("n2", "a"), ("n3", "b")]
            .iter()
            .map(|(n, z)| {
                (NodeName::new(*n).expect("valid"), BTreeMap::from([("zone".to_owned(), (*z).to_owned())]))
            })
            .collect()
    }

    fn judge_all<'a>(policies: &'a [RotationPolicy]) -> Vec<Judged<'a>> {
        let cluster = cluster();
        let nodes: Vec<NodeLabels<'_>> =
            cluster.iter().map(|(name, labels)| NodeLabels { name: name.clone(), labels }).collect();
        judge(policies, &nodes)
    }

    fn find<'a>(decided: &'a [Decided], type_: &str) -> &'a Decided {
        decided.iter().find(|d| d.type_ == type_).expect("every type is decided")
    }

    #[test]
    fn the_first_policy_by_name_owns_a_node_and_the_other_is_told() {
        let policies = [policy("zz-all", "@weekly", None), policy("aa-zone-a", "@daily", zone("a"))];
        let judged = judge_all(&policies);
        assert_eq!(judged[0].name(), "aa-zone-a");
        let names = |j: &Judged<'_>| j.owned.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(names(&judged[0]), ["n1", "n2"]);
        assert_eq!(names(&judged[1]), ["n3"]);
        let n1 = NodeName::new("n1").expect("valid");
        assert_eq!(owner_of(&judged, &n1).map(Judged::name).as_deref(), Some("aa-zone-a"));
        let conflict = find(&conditions(&judged[1], None), CONFLICT).clone();
        assert!(conflict.status && conflict.reason == reasons::OVERLAPPING_SELECTOR);
        assert!(
            conflict.message.contains("node n1") && conflict.message.contains("\"aa-zone-a\""),
            "{conflict:?}"
        );
        assert!(!find(&conditions(&judged[0], None), CONFLICT).status);
    }

    #[test]
    fn a_bad_schedule_or_selector_makes_the_policy_invalid_and_own_nothing() {
        let bad_selector = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "zone".into(),
                operator: "Near".into(),
                values: Some(vec!["a".into()]),
            }]),
            ..LabelSelector::default()
        };
        let policies = [policy("a", "0 3 * * Sun", None), policy("b", "@weekly", Some(bad_selector))];
        let judged = judge_all(&policies);
        assert!(judged.iter().all(|j| j.owned.is_empty() && !j.valid()));
        let a = conditions(&judged[0], None);
        assert_eq!(
            (find(&a, INVALID).status, find(&a, INVALID).reason.as_ref()),
            (true, reasons::INVALID_SCHEDULE)
        );
        assert!(find(&a, INVALID).message.contains("\"0 3 * * Sun\""), "{a:?}");
        assert_eq!(
            (find(&a, READY).status, find(&a, READY).reason.as_ref()),
            (false, reasons::INVALID_SCHEDULE)
        );
        let b = conditions(&judged[1], None);
        assert_eq!(find(&b, INVALID).reason, reasons::INVALID_SELECTOR);
        assert!(find(&b, INVALID).message.contains("Near"), "{b:?}");
    }

    #[test]
    fn a_selector_matching_nothing_is_ready_with_no_nodes() {
        let policies = [policy("p", "@weekly", zone("nowhere"))];
        let judged = judge_all(&policies);
        let decided = conditions(&judged[0], None);
        let ready = find(&decided, READY);
        assert_eq!((ready.status, ready.reason.as_ref()), (true, reasons::NO_NODES));
        assert!(!find(&decided, INVALID).status);
    }

    #[test]
    fn rotating_names_the_node_and_phase() {
        let policies = [policy("p", "@weekly", None)];
        let judged = judge_all(&policies);
        let n2 = NodeName::new("n2").expect("valid");
        let decided = conditions(&judged[0], Some((&n2, RotationPhase::Activate)));
        let rotating = find(&decided, ROTATING);
        assert!(rotating.status && rotating.message.contains("n2") && rotating.message.contains("Activate"));
    }
}
