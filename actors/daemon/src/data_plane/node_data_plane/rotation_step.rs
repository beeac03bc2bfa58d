//! This node's part of a key rotation phase: staging, checking and
//! promoting keys when a phase comes in force (messages to the WireGuard
//! actor, which owns the key store), and reporting the phase done once its
//! handshakes are seen.

use vpblu_messages::{NodeDesiredState, NodeRotation, PublicKey, RotationPhase, RotationReport};

use super::NodeDataPlane;
use crate::data_plane::DataPlaneError;
use crate::data_plane::actors::{WireGuardMsg, ask, query};
use crate::data_plane::handshake_wait::{self, Role};
use crate::data_plane::rotation::{self, Awaited, LaneKey};

impl NodeDataPlane {
    /// Does what a rotation phase needs before the devices follow it, once,
    /// when the phase comes in force: on the rotating node, Prepare stages
    /// a key, Distribute and Activate check that the staged key is the one
    /// distributed, Retire and Settle promote it to the active key. `Err`
    /// inside: this node's part failed (the reason goes in its report and
    /// the devices stay as they were); outside: the key store failed.
    pub(super) async fn begin_step(
        &mut self,
        rotation: Option<&NodeRotation>,
    ) -> Result<Result<(), String>, DataPlaneError> {
        let Some(r) = rotation else { return Ok(Ok(())) };
        if self.config.fail_rotation_phase == Some(r.phase) {
            return Ok(Err(format!(
                "fault injected: --fail-rotation-phase {}",
                r.phase.as_str().to_lowercase()
            )));
        }
        if !r.rotates(&self.node) {
            return Ok(Ok(()));
        }
        let (active, staged) = (self.keys.public_key, self.keys.staged_public_key);
        let wireguard = self.parts.wireguard.clone();
        let outcome = match r.phase {
            RotationPhase::Prepare => {
                let staged = ask(&wireguard, WireGuardMsg::Stage).await?;
                tracing::info!(rotation = r.id, staged = %rotation::short(&staged), "key staged for rotation");
                Ok(())
            }
            RotationPhase::Distribute | RotationPhase::Activate => {
                rotation::check_lane_key(r.new_public_key, active, staged)
            }
            // Back to the main devices whatever the keys: never refused.
            RotationPhase::Rollback => Ok(()),
            RotationPhase::Retire | RotationPhase::Settle => {
                match rotation::check_promotion(r.new_public_key, active, staged) {
                    Ok(false) => Ok(()),
                    Ok(true) => {
                        let now = ask(&wireguard, WireGuardMsg::Activate).await?;
                        tracing::info!(
                            rotation = r.id,
                            active = %rotation::short(&now),
                            "staged key is now the active key; the old one is zeroized"
                        );
                        Ok(())
                    }
                    Err(reason) => Err(reason),
                }
            }
        };
        self.keys = query(&wireguard, WireGuardMsg::Keys).await?;
        Ok(outcome)
    }

    /// The public key the lane holds for `which`.
    pub(super) fn lane_public_key(&self, which: LaneKey) -> PublicKey {
        match which {
            LaneKey::Active => self.keys.public_key,
            LaneKey::New => self.keys.staged_public_key.unwrap_or(self.keys.public_key),
        }
    }

    /// Discards a staged key once no rotation of this node is in force.
    pub(super) async fn discard_staged_unless_rotating(
        &mut self,
        effective: Option<&NodeRotation>,
    ) -> Result<(), DataPlaneError> {
        if effective.is_some_and(|r| r.rotates(&self.node)) || self.keys.staged_public_key.is_none() {
            return Ok(());
        }
        if ask(&self.parts.wireguard, WireGuardMsg::DiscardStaged).await? {
            tracing::info!("staged key discarded: no rotation of this node is in force");
        }
        self.keys.staged_public_key = None;
        Ok(())
    }

    /// This node's report on `rotation`'s phase.
    pub(super) fn report(&self, rotation: &NodeRotation, result: Result<(), String>) -> RotationReport {
        let staged_public_key = if rotation.rotates(&self.node) { self.keys.staged_public_key } else { None };
        RotationReport { rotation_id: rotation.id, phase: rotation.phase, result, staged_public_key }
    }

    /// Reports `rotation`'s phase done now, or once its handshakes are seen
    /// (a task: the stream client keeps applying commands meanwhile).
    pub(super) async fn report_when_done(
        &mut self,
        state: &NodeDesiredState,
        rotation: &NodeRotation,
    ) -> Result<(), DataPlaneError> {
        let template = self.report(rotation, Ok(()));
        let (which, peers) = match rotation::awaited(state, rotation, &self.node) {
            Awaited::Nothing => {
                self.reports.publish(template);
                return Ok(());
            }
            Awaited::Handshakes { device, peers } => (device, peers),
        };
        let wireguard = self.parts.wireguard.clone();
        let awaiting = query(&wireguard, |reply| WireGuardMsg::Awaiting(which, peers, reply)).await?;
        // One end starts each handshake, or crossed initiations can leave
        // both ends waiting for WireGuard's 5 s retry (see handshake_wait).
        let role = if rotation.rotates(&self.node) { Role::Initiator } else { Role::Responder };
        let reports = self.reports.clone();
        self.rotation.wait = Some(vpblu_runtime::spawn(async move {
            let result = handshake_wait::wait(wireguard, which, awaiting, role, handshake_wait::LIMIT).await;
            reports.publish(RotationReport { result, ..template });
        }));
        Ok(())
    }
}
