//! `POST /admin/reset`: the lab's "reset cluster" without a restart.
//!
//! It reuses `--reset` (`State::reset`): every task and service is
//! forgotten (intelligence stays) and the framework is torn down, so Mesos
//! kills whatever still runs for it. The reply is held here, not sent in
//! the turn that handled the request, until the old framework is certainly
//! gone: the reader subscribed a framework with a different id, which it
//! only does once the master said "Framework has been removed" (TEARDOWN
//! delivered). A reply still held after `RESET_REPLY_LIMIT` answers
//! "outcome unknown" (504), so no request id is held forever.

use std::time::{Duration, Instant};

use super::State;
use crate::scheduler::model::FrameworkId;
use crate::scheduler::{ApiReply, Call, Now, RequestId};

/// How long a reset reply may wait for the new subscription before it is
/// answered 504 "outcome unknown" (the teardown may still happen). Longer
/// than the REST commit wait (`api::COMMIT_WAIT`), which answers the client
/// first; this only frees the request id.
pub const RESET_REPLY_LIMIT: Duration = Duration::from_secs(120);

/// Resets waiting at most: a further one is answered 504 at once rather
/// than held (each holds an HTTP worker until its commit wait).
pub const MAX_PENDING_RESETS: usize = 64;

/// A reset whose reply waits for the old framework to be gone.
#[derive(Debug)]
pub(super) struct PendingReset {
    id: RequestId,
    killed: usize,
    /// The framework being torn down; a subscription under any other id
    /// means it is gone.
    old: FrameworkId,
    deadline: Instant,
}

impl State {
    /// Forgets every task, tears the framework down (now when subscribed,
    /// else on the next subscription, like `--reset`), and holds the reply.
    pub(super) fn on_reset(&mut self, id: RequestId, now: Now, calls: &mut Vec<Call>) {
        let killed = self.tasks.len();
        let old = self.framework_id.clone();
        let forgotten: Vec<_> = self.tasks.keys().cloned().collect();
        for task_id in &forgotten {
            self.note_kill(task_id, crate::scheduler::notice::KilledBy::Reset, now);
        }
        self.reset();
        log::info!(
            "reset: tasks forgotten, tearing the framework down killed={killed} framework={}",
            old.as_ref().map_or("none", |it| it.0.as_str())
        );
        let Some(old) = old else {
            // No framework was ever registered: nothing to wait for.
            self.replies.push((id, ApiReply::ResetDone { killed }));
            return;
        };
        if self.pending_resets.len() >= MAX_PENDING_RESETS {
            log::warn!("reset: too many resets waiting; answered outcome unknown");
            self.replies.push((id, ApiReply::OutcomeUnknown));
            return;
        }
        if self.subscribed {
            // `reset` set it for the next subscription; this one can go now.
            self.teardown_pending = false;
            calls.push(Call::Teardown);
        }
        self.pending_resets.push(PendingReset {
            id,
            killed,
            old,
            deadline: now.instant + RESET_REPLY_LIMIT,
        });
    }

    /// A subscription under `framework_id`: resets that tore another
    /// framework down are done.
    pub(super) fn finish_resets(&mut self, framework_id: &FrameworkId) {
        let (done, waiting) = std::mem::take(&mut self.pending_resets)
            .into_iter()
            .partition(|reset| reset.old != *framework_id);
        self.pending_resets = waiting;
        for reset in done {
            log::info!(
                "reset: old framework gone, new one subscribed killed={} old={} new={}",
                reset.killed,
                reset.old.0,
                framework_id.0
            );
            self.replies.push((
                reset.id,
                ApiReply::ResetDone {
                    killed: reset.killed,
                },
            ));
        }
    }

    /// Resets past `RESET_REPLY_LIMIT` are answered "outcome unknown".
    pub(super) fn expire_resets(&mut self, now: Instant) {
        let (expired, waiting) = std::mem::take(&mut self.pending_resets)
            .into_iter()
            .partition(|reset| now >= reset.deadline);
        self.pending_resets = waiting;
        for reset in expired {
            log::warn!(
                "reset: no new subscription in time; answered outcome unknown old={}",
                reset.old.0
            );
            self.replies.push((reset.id, ApiReply::OutcomeUnknown));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::{ApiRequest, Event, MesosEvent};

    fn framework(id: &str) -> FrameworkId {
        FrameworkId(id.to_string())
    }

    fn subscribed(id: &str) -> Event {
        Event::Mesos(MesosEvent::Subscribed {
            framework_id: framework(id),
        })
    }

    /// What a turn answered: (request id, killed) or None for 504.
    fn answers(replies: &[(RequestId, ApiReply)]) -> Vec<(u64, Option<usize>)> {
        replies
            .iter()
            .map(|(id, reply)| match reply {
                ApiReply::ResetDone { killed } => (id.0, Some(*killed)),
                _ => (id.0, None),
            })
            .collect()
    }

    #[test]
    fn the_reply_waits_for_a_subscription_under_a_new_id() {
        let now = Now::current();
        let mut state = State::new(Some(framework("old")));
        state.handle_event(subscribed("old"), now);
        let turn = state.handle_event(Event::Api(RequestId(7), ApiRequest::Reset), now);
        assert_eq!(turn.calls, vec![Call::Teardown]);
        assert!(turn.replies.is_empty(), "{:?}", turn.replies);
        // The old stream's end and the master's "removed" do not answer it.
        let turn = state.handle_event(
            Event::Mesos(MesosEvent::Disconnected {
                reason: "stream ended".to_string(),
            }),
            now,
        );
        assert!(turn.replies.is_empty());
        let turn = state.handle_event(Event::Mesos(MesosEvent::FrameworkRemoved), now);
        assert!(turn.replies.is_empty());
        let turn = state.handle_event(subscribed("new"), now);
        assert_eq!(answers(&turn.replies), vec![(7, Some(0))]);
    }

    #[test]
    fn a_reset_while_disconnected_tears_down_on_the_next_subscription() {
        let now = Now::current();
        let mut state = State::new(Some(framework("old")));
        let turn = state.handle_event(Event::Api(RequestId(1), ApiRequest::Reset), now);
        assert!(turn.calls.is_empty() && turn.replies.is_empty());
        let turn = state.handle_event(subscribed("old"), now);
        assert_eq!(turn.calls, vec![Call::Teardown]);
        assert!(turn.replies.is_empty());
        let turn = state.handle_event(subscribed("new"), now);
        assert_eq!(answers(&turn.replies), vec![(1, Some(0))]);
    }

    /// The stored framework was removed meanwhile (e.g. its failover
    /// timeout ran out): the new one must not be torn down in its place.
    #[test]
    fn a_framework_removed_before_its_teardown_is_not_replaced_by_a_teardown() {
        let now = Now::current();
        let mut state = State::new(Some(framework("old")));
        state.handle_event(Event::Api(RequestId(3), ApiRequest::Reset), now);
        let turn = state.handle_event(Event::Mesos(MesosEvent::FrameworkRemoved), now);
        assert!(turn.replies.is_empty());
        let turn = state.handle_event(subscribed("new"), now);
        assert!(!turn.calls.contains(&Call::Teardown), "{:?}", turn.calls);
        assert_eq!(answers(&turn.replies), vec![(3, Some(0))]);
    }

    #[test]
    fn without_a_framework_it_answers_at_once_and_a_stuck_one_expires() {
        let now = Now::current();
        let mut state = State::new(None);
        let turn = state.handle_event(Event::Api(RequestId(1), ApiRequest::Reset), now);
        assert_eq!(answers(&turn.replies), vec![(1, Some(0))]);

        let mut state = State::new(Some(framework("old")));
        state.handle_event(subscribed("old"), now);
        state.handle_event(Event::Api(RequestId(2), ApiRequest::Reset), now);
        let later = Now {
            instant: now.instant + RESET_REPLY_LIMIT,
            wall: now.wall,
        };
        let turn = state.handle_event(Event::Tick, later);
        assert_eq!(answers(&turn.replies), vec![(2, None)]);
        let turn = state.handle_event(subscribed("new"), later);
        assert!(turn.replies.is_empty(), "answered once only");
    }
}
