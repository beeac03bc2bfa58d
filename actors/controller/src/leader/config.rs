//! The Leader's configuration (which Lease, who we are, the timings)
//! and its errors.

use std::time::Duration;

/// Which Lease, who we are, and the timings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// How long the Lease holds without renewal.
    pub lease_duration: Duration,
    /// How often the leader renews, and a standby polls.
    pub renew: Duration,
    /// How long past the renew deadline a leader that cannot reach the API
    /// server keeps leading.
    pub outage_grace: Duration,
}

impl LeaderConfig {
    /// Refuses timings under which a leader could not keep its Lease.
    pub fn check(&self) -> Result<(), LeaderError> {
        if self.identity.is_empty() {
            return Err(LeaderError::Config("the identity is empty: set --identity (POD_NAME)".into()));
        }
        if self.renew.is_zero() || self.renew >= self.lease_duration {
            return Err(LeaderError::Config(format!(
                "--lease-renew {:?} must be shorter than --lease-duration {:?} (for example 5s and 15s)",
                self.renew, self.lease_duration
            )));
        }
        Ok(())
    }

    /// A leader that has not renewed for this long steps down: one renew
    /// period before the Lease can expire for anyone else.
    pub(super) fn renew_deadline(&self) -> Duration {
        self.lease_duration - self.renew
    }

    /// `leaseDurationSeconds`, rounded up.
    pub(super) fn duration_seconds(&self) -> i32 {
        let secs = self.lease_duration.as_secs() + u64::from(self.lease_duration.subsec_nanos() > 0);
        i32::try_from(secs).unwrap_or(i32::MAX).max(1)
    }
}

/// Why a Lease call failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The configuration cannot work.
    #[error("leader election: {0}")]
    Config(String),
    /// The API server refused or failed the call.
    #[error("Lease {lease}: {source}")]
    Api {
        /// `namespace/name`.
        lease: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Someone else wrote the Lease between our read and our write.
    #[error("Lease {lease} changed while we wrote it")]
    Conflict {
        /// `namespace/name`.
        lease: String,
    },
    /// No answer in time.
    #[error("no answer from the API server within {0:?}")]
    Timeout(Duration),
}

impl LeaderError {
    /// Whether the API server could not be reached or could not answer
    /// (transport error, timeout, 5xx, 429), as opposed to answering no.
    pub(super) fn is_outage(&self) -> bool {
        match self {
            LeaderError::Timeout(_) => true,
            LeaderError::Api { source: kube::Error::Api(status), .. } => {
                status.code >= 500 || status.code == 429
            }
            LeaderError::Api { .. } => true,
            LeaderError::Config(_) | LeaderError::Conflict { .. } => false,
        }
    }
}
