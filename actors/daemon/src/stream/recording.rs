//! A data plane that only records: for tests, where the stream is
//! exercised without WireGuard or eBPF. Built only with the
//! `test-support` feature, so no release binary carries it.

use std::sync::{Arc, Mutex, PoisonError};

use vpblu_messages::{Command, Generation, NodeDesiredState, NodeName, apply};

use super::{DataPlane, HelloFacts};

/// One command the data plane was asked to apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedCommand {
    /// Its generation.
    pub generation: Generation,
    /// The command.
    pub command: Command,
    /// What `apply` returned.
    pub result: Result<(), String>,
}

/// Keeps a [`NodeDesiredState`] by replaying every command onto it with
/// `vpblu_messages::apply`, records every command, and can be told to fail
/// the next one. Clones share one recording, so a test keeps a clone while
/// the stream client owns another.
#[derive(Clone, Debug)]
pub struct RecordingDataPlane {
    inner: Arc<Mutex<Recording>>,
}

#[derive(Debug)]
struct Recording {
    facts: HelloFacts,
    state: NodeDesiredState,
    applied: Generation,
    commands: Vec<RecordedCommand>,
    fail_next: Option<String>,
}

impl RecordingDataPlane {
    /// An empty data plane for `node` that says `facts` in its Hello.
    pub fn new(node: NodeName, facts: HelloFacts) -> Self {
        let recording = Recording {
            facts,
            state: NodeDesiredState::empty(node),
            applied: Generation::default(),
            commands: Vec::new(),
            fail_next: None,
        };
        RecordingDataPlane { inner: Arc::new(Mutex::new(recording)) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recording> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state the commands so far add up to.
    pub fn state(&self) -> NodeDesiredState {
        self.lock().state.clone()
    }

    /// Every command it was asked to apply, in order.
    pub fn commands(&self) -> Vec<RecordedCommand> {
        self.lock().commands.clone()
    }

    /// Makes the next `apply` fail with `error` (and change nothing).
    pub fn fail_next(&self, error: impl Into<String>) {
        self.lock().fail_next = Some(error.into());
    }
}

/// The failure [`RecordingDataPlane::fail_next`] was told to make.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InjectedFailure(pub String);

impl DataPlane for RecordingDataPlane {
    type Error = InjectedFailure;

    async fn apply(&mut self, generation: Generation, command: &Command) -> Result<(), InjectedFailure> {
        let mut recording = self.lock();
        let result = match recording.fail_next.take() {
            Some(error) => Err(error),
            None => {
                apply(&mut recording.state, command);
                recording.applied = generation;
                Ok(())
            }
        };
        recording.commands.push(RecordedCommand {
            generation,
            command: command.clone(),
            result: result.clone(),
        });
        result.map_err(InjectedFailure)
    }

    fn applied_generation(&self) -> Generation {
        self.lock().applied
    }

    fn hello_facts(&self) -> HelloFacts {
        self.lock().facts.clone()
    }
}
