//! Pausing a nexus's writes for a consistent snapshot of its replicas.
//!
//! A snapshot of a replicated volume must be one point of the write stream on every replica:
//! each replica's snapshot holds every write the host was told had completed before that
//! point and none after it. [`Nexus::pause_io`] makes that point: every host write that
//! arrives from then on is held on its channel (a write, write zeroes or deallocate waits as it
//! waits for a rebuild's range lock, reads and flushes go on), and the pause answers once every
//! write already running has completed on every child (the gate's barrier). The control plane
//! then snapshots each in-sync replica on its node and calls [`Nexus::resume_io`], which lets
//! the held writes go.
//!
//! A pause must never hold a volume's writes for good because whoever asked for it died: it
//! carries a deadline, after which the nexus resumes by itself. Each pause has a generation;
//! `resume_io` names it and fails when that pause is no longer in force (it lapsed, or another
//! pause replaced it), so a caller that was too slow learns that its snapshots may not be
//! one point of the stream and throws them away. A successful `resume_io` means the writes
//! were held from the pause's answer until the resume, and so during every snapshot taken in
//! between. Only one pause at a time: a second one is refused while the first is in force.
//!
//! Children that are not in sync when the pause answers (being rebuilt, faulted) are left
//! out of [`PauseInfo::in_sync`]: their contents are not the volume's. A rebuild goes on
//! during a pause (its copies write only to the child being rebuilt).
//!
//! Here: the calls ([`Nexus::pause_io`], [`Nexus::resume_io`], [`Nexus::pause_status`]) and
//! what they answer; the pause state they keep is the nexus's (`Pause`, in [`crate::nexus`]),
//! and the flag that holds the writes is the gate's.

use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::NexusError;
use crate::exec::{Ticket, sleep, spawn};
use crate::nexus::Nexus;
use crate::state::ChildState;

/// Longest pause a caller may ask for.
pub const MAX_PAUSE: Duration = Duration::from_secs(60);

/// What a pause answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PauseInfo {
    /// The pause's generation, to pass to [`Nexus::resume_io`].
    pub generation: u64,
    /// The URIs of the children in sync when the pause took effect.
    pub in_sync: Vec<String>,
}

/// The pause as `nexus_get` could show it: the generation in force and the lapsed count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PauseStatus {
    /// The pause in force.
    pub active: Option<u64>,
    /// Pauses that ended by their deadline since the nexus was created.
    pub lapsed: u64,
}

impl Nexus {
    /// Holds every new host write, waits until the writes already running have completed on
    /// every child, and answers the pause's generation and the in-sync children. The nexus
    /// resumes by itself after `deadline` (1 ms to [`MAX_PAUSE`]) unless [`Nexus::resume_io`]
    /// came first.
    pub fn pause_io(self: &Arc<Self>, deadline: Duration) -> Ticket<Result<PauseInfo, NexusError>> {
        if deadline.is_zero() || deadline > MAX_PAUSE {
            return Ticket::ready(Err(NexusError::Invalid(format!(
                "a pause lasts 1 ms to {} s, not {deadline:?}",
                MAX_PAUSE.as_secs()
            ))));
        }
        if self.lock_state().destroying {
            return Ticket::ready(Err(NexusError::Destroyed));
        }
        let nx = Arc::clone(self);
        crate::exec::run_on(&self.home, move || async move {
            let generation = {
                let mut p = nx.pause.lock();
                if let Some(g) = p.active {
                    return Err(NexusError::Pause(format!(
                        "the nexus's writes are already paused (pause {g}); one pause at a time"
                    )));
                }
                p.generation = p.generation.wrapping_add(1);
                p.active = Some(p.generation);
                p.generation
            };
            nx.gate.set_paused(true);
            // The deadline runs from the request: a barrier that waits long eats into it.
            let weak: Weak<Nexus> = Arc::downgrade(&nx);
            spawn(async move {
                sleep(deadline).await;
                if let Some(nx) = weak.upgrade() {
                    nx.end_pause(generation, true);
                }
            });
            nx.gate.barrier().await;
            let in_sync = nx
                .lock_state()
                .children
                .iter()
                .filter(|c| c.state == ChildState::Online)
                .map(|c| c.uri.to_string())
                .collect();
            if nx.pause.lock().active != Some(generation) {
                return Err(NexusError::Pause(format!(
                    "pause {generation} lapsed before the writes in flight had completed"
                )));
            }
            tracing::info!(nexus = %nx.info.name, generation, ?deadline, "host writes paused");
            Ok(PauseInfo {
                generation,
                in_sync,
            })
        })
    }

    /// Ends pause `generation`: the held writes go on. Fails when that pause is not in force
    /// any more (it lapsed at its deadline, or it is not the current one): then the writes
    /// were not held all the time since the pause answered.
    ///
    /// # Errors
    /// [`NexusError::Pause`] naming what happened.
    pub fn resume_io(&self, generation: u64) -> Result<(), NexusError> {
        if self.end_pause(generation, false) {
            return Ok(());
        }
        let p = self.pause.lock();
        Err(NexusError::Pause(match p.active {
            Some(g) => format!("pause {generation} is not the one in force ({g})"),
            None if generation != 0 && generation <= p.generation => {
                format!("pause {generation} is over: it lapsed at its deadline, or was resumed")
            }
            None => format!("there was no pause {generation}"),
        }))
    }

    /// The pause in force and how many lapsed.
    pub fn pause_status(&self) -> PauseStatus {
        let p = self.pause.lock();
        PauseStatus {
            active: p.active,
            lapsed: p.lapsed,
        }
    }

    /// Ends pause `generation` if it is in force; `lapsed` when its deadline ended it.
    fn end_pause(&self, generation: u64, lapsed: bool) -> bool {
        let mut p = self.pause.lock();
        if p.active != Some(generation) {
            return false;
        }
        p.active = None;
        if lapsed {
            p.lapsed = p.lapsed.saturating_add(1);
        }
        self.gate.set_paused(false);
        drop(p);
        if lapsed {
            tracing::warn!(nexus = %self.info.name, generation,
                "pause reached its deadline without a resume: host writes go on");
        } else {
            tracing::info!(nexus = %self.info.name, generation, "host writes resumed");
        }
        true
    }
}
