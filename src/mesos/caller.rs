//! The `mesos-caller` thread: POSTs the state thread's `Call`s, in order, with
//! the newest session's stream id.
//!
//! A call is never dropped for want of a session or because the master was
//! briefly unreachable (except a SUPPRESS whose subscription ended: a new
//! subscription un-suppresses the framework, and the state thread counts on
//! it): with no session the caller waits for one; a call the
//! master did not get (connect failure, 503, 307) is sent again after a capped
//! jittered backoff, or at once when the reader hands over a newer session. A
//! call that may have reached the master (an I/O error after the request went
//! out) is sent again only when it is idempotent; ACCEPT is not, so it is
//! reported as `CallFailure::OutcomeUnknown` and reconciliation decides. A 4xx
//! is `CallFailure::Refused`. Those two are the only failures the state
//! thread hears of. Every wait ends at shutdown (`stop`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender};

use crate::mesos::backoff::Backoff;
use crate::mesos::client::{CallError, Caller};
use crate::mesos::{convert, Session};
use crate::metrics::Metrics;
use crate::scheduler::{Call, CallFailure, MesosEvent};

/// First delay before a call is sent again.
pub const CALL_BACKOFF_MIN: Duration = Duration::from_millis(250);

/// The longest wait between two attempts of one call: with the event stream
/// up and only calls failing, no new session comes to cut the wait short, so
/// this is how late a call can be once the master takes calls again.
pub const CALL_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The caller thread's state: the current session and the outage in progress.
pub(crate) struct CallerLoop {
    caller: Caller,
    calls: Receiver<Call>,
    sessions: Receiver<Session>,
    stop: Receiver<()>,
    events: Sender<MesosEvent>,
    /// The newest session the reader handed over; kept until a newer one comes.
    session: Option<Session>,
    /// Calls are failing since then; logged once when it starts and once when it ends.
    outage: Option<Outage>,
    /// Every attempt is counted here by call type and result.
    metrics: Arc<Metrics>,
}

/// A run of failed attempts, for one log line at each end.
struct Outage {
    since: Instant,
    failed_attempts: u64,
}

/// Whether the thread goes on.
#[derive(PartialEq)]
enum Flow {
    Continue,
    Stop,
}

impl CallerLoop {
    pub(crate) fn new(
        caller: Caller,
        calls: Receiver<Call>,
        sessions: Receiver<Session>,
        stop: Receiver<()>,
        events: Sender<MesosEvent>,
        metrics: Arc<Metrics>,
    ) -> CallerLoop {
        CallerLoop {
            caller,
            calls,
            sessions,
            stop,
            events,
            session: None,
            outage: None,
            metrics,
        }
    }

    /// Sends calls until the state side closes the channel or shutdown.
    pub(crate) fn run(mut self) {
        loop {
            // Idle, it still takes each new session: the reader's handover
            // channel is bounded and must never fill up while no call comes.
            let call = select! {
                recv(self.calls) -> call => match call {
                    Ok(call) => call,
                    Err(_) => return,
                },
                recv(self.sessions) -> newer => match newer {
                    Ok(newer) => {
                        self.session = Some(newer);
                        continue;
                    }
                    // The reader has ended: calls can still arrive and wait.
                    Err(_) => match self.calls.recv() {
                        Ok(call) => call,
                        Err(_) => return,
                    },
                },
            };
            if self.deliver(call) == Flow::Stop {
                if let Some(outage) = self.outage.take() {
                    log::warn!(
                        "mesos caller stopping with calls unsent failed_attempts={}",
                        outage.failed_attempts
                    );
                }
                return;
            }
        }
    }

    /// Sends one call until it is delivered, refused, or (ACCEPT only) its
    /// outcome is unknown.
    fn deliver(&mut self, call: Call) -> Flow {
        let mut backoff = Backoff::new(CALL_BACKOFF_MIN, CALL_BACKOFF_MAX);
        // ACCEPT is the one call that must not be sent twice.
        let idempotent = !matches!(call, Call::Launch { .. });
        // A new subscription un-suppresses the framework, and the state
        // thread counts on that: a SUPPRESS carried over to it would leave
        // the framework suppressed with the state thread believing not
        // (no offers ever again; seen after POST /admin/reset's TEARDOWN).
        let session_scoped = matches!(call, Call::Suppress);
        // The stream an ACCEPT or SUPPRESS was first tried on: its offers
        // (or the suppression it changes) die with it.
        let mut first_stream: Option<String> = None;
        loop {
            self.take_newest_session();
            let Some(session) = self.session.clone() else {
                if !self.wait_for_session(None) {
                    return Flow::Stop;
                }
                continue;
            };
            if session_scoped {
                let first = first_stream.get_or_insert_with(|| session.stream_id.clone());
                if *first != session.stream_id {
                    log::debug!(
                        "mesos call dropped, its subscription ended call={}",
                        call.name()
                    );
                    return Flow::Continue;
                }
            }
            if !idempotent {
                let first = first_stream.get_or_insert_with(|| session.stream_id.clone());
                if *first != session.stream_id {
                    // The master never got it, and now never will act on it:
                    // the offers were rescinded when the subscription ended.
                    log::warn!(
                        "mesos call not sent, its subscription ended call={}",
                        call.name()
                    );
                    return self.report(
                        call,
                        CallFailure::Refused(
                            "not sent: the subscription its offers came from has ended".to_string(),
                        ),
                    );
                }
            }
            let bytes = convert::call_to_bytes(&call, &session.framework_id);
            let result = self
                .caller
                .post(&session.leader, &session.stream_id, &bytes, idempotent);
            self.metrics.count_call(&call, &result);
            let error = match result {
                Ok(()) => {
                    log::debug!("mesos call sent call={}", call.name());
                    if let Some(outage) = self.outage.take() {
                        log::info!(
                            "mesos calls delivered again after_ms={} failed_attempts={}",
                            outage.since.elapsed().as_millis(),
                            outage.failed_attempts
                        );
                    }
                    return Flow::Continue;
                }
                Err(error) => error,
            };
            match error {
                // Sent on a session whose stream has ended: the master
                // refuses it as "not subscribed" or for a stale stream id.
                // It did not act; send again on the next session.
                CallError::Refused(_) if idempotent && session.has_ended() => {
                    self.note_failure(&call, &error);
                    if !self.wait_for_session(None) {
                        return Flow::Stop;
                    }
                }
                CallError::Refused(reason) => {
                    log::warn!("mesos call refused call={} reason={reason}", call.name());
                    return self.report(call, CallFailure::Refused(reason.to_string()));
                }
                CallError::OutcomeUnknown(reason) if !idempotent => {
                    log::warn!(
                        "mesos call outcome unknown, not resent call={} reason={reason}",
                        call.name()
                    );
                    return self.report(call, CallFailure::OutcomeUnknown(reason.to_string()));
                }
                CallError::NotDelivered(_) | CallError::OutcomeUnknown(_) => {
                    self.note_failure(&call, &error);
                    if !self.wait_for_session(Some(backoff.next_delay())) {
                        return Flow::Stop;
                    }
                }
            }
        }
    }

    /// Tells the state thread about a call that failed for good.
    fn report(&self, call: Call, failure: CallFailure) -> Flow {
        match self.events.send(MesosEvent::CallFailed { call, failure }) {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Stop,
        }
    }

    /// Counts a failed attempt; only the first of an outage is logged above debug.
    fn note_failure(&mut self, call: &Call, error: &CallError) {
        match &mut self.outage {
            Some(outage) => {
                outage.failed_attempts += 1;
                log::debug!(
                    "mesos call failed again call={} failed_attempts={} reason={error}",
                    call.name(),
                    outage.failed_attempts
                );
            }
            None => {
                log::warn!(
                    "mesos call failed, retrying until delivered call={} reason={error}",
                    call.name()
                );
                self.outage = Some(Outage {
                    since: Instant::now(),
                    failed_attempts: 1,
                });
            }
        }
    }

    fn take_newest_session(&mut self) {
        while let Ok(newer) = self.sessions.try_recv() {
            self.session = Some(newer);
        }
    }

    /// Waits for a newer session, at most `timeout` (`None`: as long as it
    /// takes). False at shutdown.
    fn wait_for_session(&mut self, timeout: Option<Duration>) -> bool {
        let timeout = match timeout {
            Some(timeout) => crossbeam_channel::after(timeout),
            None => crossbeam_channel::never(),
        };
        select! {
            recv(self.sessions) -> newer => match newer {
                Ok(newer) => {
                    self.session = Some(newer);
                    self.take_newest_session();
                    true
                }
                // The reader has ended: we are shutting down.
                Err(_) => false,
            },
            recv(self.stop) -> _ => false,
            recv(timeout) -> _ => true,
        }
    }
}

impl Session {
    /// True once the event stream this session came with has ended.
    fn has_ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::{Arc, Mutex};

    use crossbeam_channel::bounded;

    use super::*;
    use crate::scheduler::model::FrameworkId;

    /// See: review of issue 8. An idle caller only waited for calls, so the
    /// reader's bounded session handover filled up after a run of
    /// resubscriptions with no call, and the reader stopped reading events.
    #[test]
    fn an_idle_caller_takes_every_new_session() {
        let (_call_tx, calls) = bounded::<Call>(1);
        let (session_tx, sessions) = bounded::<Session>(2);
        let (_stop_tx, stop) = bounded::<()>(0);
        let (events, _event_rx) = bounded::<MesosEvent>(1);
        let caller = Caller::new(None, Arc::new(Mutex::new(None)));
        let thread = std::thread::spawn(move || {
            CallerLoop::new(caller, calls, sessions, stop, events, Arc::default()).run()
        });
        for n in 0..10 {
            let session = Session {
                leader: "127.0.0.1:1".to_string(),
                stream_id: format!("stream-{n}"),
                framework_id: FrameworkId("fw".to_string()),
                ended: Arc::new(AtomicBool::new(false)),
            };
            session_tx
                .send_timeout(session, Duration::from_secs(5))
                .expect("the caller takes the session");
        }
        drop(session_tx);
        drop(_call_tx);
        thread.join().expect("the caller ends");
    }
}
