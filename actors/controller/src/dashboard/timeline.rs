//! The rotation timeline: VpbluNode status keeps only the current phase,
//! so the dashboard notes every phase change it sees, to show a rotation's
//! steps after they happened.

use std::collections::{BTreeMap, VecDeque};

use vpblu_k8s::{IDLE_PHASE, VpbluNode};
use vpblu_view::RotationStep;

/// Steps kept (oldest dropped first): a few full rotations of a large
/// cluster's worth of recent history.
const KEPT: usize = 200;

/// Last phase per node and the steps seen.
#[derive(Debug, Default)]
pub(super) struct Timeline {
    /// Only nodes seen in a rotation: a node not here is idle, so an idle
    /// cluster of 5000 nodes is read each second without a copy.
    phases: BTreeMap<String, String>,
    steps: VecDeque<RotationStep>,
}

impl Timeline {
    /// Notes the phase changes among `nodes` as seen at `at` (RFC 3339).
    /// A node seen for the first time counts only when it is rotating, so
    /// a (re)start does not fill the timeline with idle nodes.
    pub(super) fn observe<'a>(&mut self, nodes: impl IntoIterator<Item = &'a VpbluNode>, at: &str) {
        for node in nodes {
            let Some(name) = node.metadata.name.as_deref() else { continue };
            let rotation = node.status.as_ref().and_then(|s| s.rotation.as_ref());
            let phase = rotation.and_then(|r| r.phase.as_deref()).unwrap_or(IDLE_PHASE);
            let last = self.phases.get(name).map_or(IDLE_PHASE, String::as_str);
            if last == phase {
                continue;
            }
            let result = rotation.and_then(|r| r.last_result.clone()).filter(|_| phase == IDLE_PHASE);
            self.steps.push_back(RotationStep {
                at: at.to_owned(),
                node: name.to_owned(),
                phase: phase.to_owned(),
                result,
            });
            if self.steps.len() > KEPT {
                self.steps.pop_front();
            }
            if phase == IDLE_PHASE {
                self.phases.remove(name);
            } else {
                self.phases.insert(name.to_owned(), phase.to_owned());
            }
        }
    }

    /// The steps, oldest first.
    pub(super) fn steps(&self) -> Vec<RotationStep> {
        self.steps.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vpblu_k8s::{RotationStatus, VpbluNodeSpec, VpbluNodeStatus};

    fn node(phase: Option<&str>, result: Option<&str>) -> VpbluNode {
        let mut node = VpbluNode::new("node-1", VpbluNodeSpec::default());
        node.status = Some(VpbluNodeStatus {
            rotation: phase.map(|p| RotationStatus {
                phase: Some(p.into()),
                last_result: result.map(str::to_owned),
                ..RotationStatus::default()
            }),
            ..VpbluNodeStatus::default()
        });
        node
    }

    #[test]
    fn only_changes_are_steps_and_the_end_carries_the_result() {
        let mut timeline = Timeline::default();
        timeline.observe([&node(None, None)], "t0");
        timeline.observe([&node(Some("Prepare"), None)], "t1");
        timeline.observe([&node(Some("Prepare"), None)], "t2");
        timeline.observe([&node(Some("Distribute"), None)], "t3");
        timeline.observe([&node(Some("Idle"), Some("Succeeded"))], "t4");
        let steps: Vec<(String, String, Option<String>)> =
            timeline.steps().into_iter().map(|s| (s.at, s.phase, s.result)).collect();
        assert_eq!(
            steps,
            [
                ("t1".into(), "Prepare".into(), None),
                ("t3".into(), "Distribute".into(), None),
                ("t4".into(), "Idle".into(), Some("Succeeded".into())),
            ]
        );
    }
}
