//! The `mesos-caller` thread and its `mesos-lane-N` threads: POST the state
//! thread's `Call`s with the newest session's stream id, `CALL_LANES` at a
//! time.
//!
//! The caller thread (`CallerLoop`) never does I/O: it drains the journal's
//! channel into its pending queue (`lanes::Lanes`, at most
//! `MAX_PENDING_CALLS`), hands each free lane thread the next batch its lane
//! may send (`lanes` says which calls keep their order), and decides what
//! becomes of each attempt (`settle`, then `record`, the one place a call's
//! outcome is known). A lane thread owns one keep-alive connection
//! (`client::Caller`) and sends its batch one call after another, stopping at
//! the first failure.
//!
//! A call is never dropped for want of a session or because the master was
//! briefly unreachable (except a SUPPRESS whose subscription ended: a new
//! subscription un-suppresses the framework, and the state thread counts on
//! it): with no session it waits for one; a call the master did not get
//! (connect failure, 503, 307) is sent again after a capped jittered backoff,
//! or at once when the reader hands over a newer session. A call that may
//! have reached the master (an I/O error after the request went out) is sent
//! again only when it is idempotent; ACCEPT is not, so it is reported as
//! `CallFailure::OutcomeUnknown` and reconciliation decides. A 4xx is
//! `CallFailure::Refused`. Those two are the only failures the state thread
//! hears of. At shutdown (`stop`) nothing waits any more: what needs a wait
//! is left unsent.

pub(crate) mod lanes;

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender};

use crate::lograte::RateLimit;
use crate::mesos::caller::lanes::{Entry, Lanes, Wait};
use crate::mesos::client::{BasicAuth, CallError, Caller, SocketSlot};
use crate::mesos::{convert, Session};
use crate::metrics::Metrics;
use crate::scheduler::{Call, CallFailure, MesosEvent};

/// First delay before a call is sent again.
pub const CALL_BACKOFF_MIN: Duration = Duration::from_millis(250);

/// The longest wait between two attempts of one call: with the event stream
/// up and only calls failing, no new session comes to cut the wait short, so
/// this is how late a call can be once the master takes calls again.
pub const CALL_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A batch for a lane thread, sent on `session`.
pub(crate) struct Work {
    lane: usize,
    session: Session,
    entries: Vec<Entry>,
}

/// A batch back from a lane thread: one result per call tried, in order; the
/// lane stops at the first failure, so the entries after the last result
/// were not tried.
pub(crate) struct Done {
    lane: usize,
    session: Session,
    entries: Vec<Entry>,
    results: Vec<Result<(), CallError>>,
}

/// The caller thread's ends of the channels to its lane threads.
pub(crate) struct LaneLinks {
    work: Vec<Sender<Work>>,
    done: Receiver<Done>,
}

/// Starts one `mesos-lane-N` thread per socket slot (`CALL_LANES` of them),
/// each with its own connection. They end when the returned links are dropped.
pub(crate) fn start_lanes(
    auth: Option<BasicAuth>,
    socket_slots: &[SocketSlot],
) -> io::Result<(LaneLinks, Vec<JoinHandle<()>>)> {
    // Each lane has at most one batch out, so neither direction ever fills.
    let (done_sender, done) = crossbeam_channel::bounded(socket_slots.len());
    let mut work = Vec::new();
    let mut threads = Vec::new();
    for (lane, slot) in socket_slots.iter().enumerate() {
        let (work_sender, work_receiver) = crossbeam_channel::bounded(1);
        let caller = Caller::new(auth.clone(), slot.clone());
        let done_sender = done_sender.clone();
        threads.push(
            thread::Builder::new()
                .name(format!("mesos-lane-{lane}"))
                .spawn(move || run_lane(caller, work_receiver, done_sender))?,
        );
        work.push(work_sender);
    }
    Ok((LaneLinks { work, done }, threads))
}

/// A lane thread: sends each batch's calls in order on its one connection
/// (pipelined when there are several), stopping at the first failure, and
/// hands the batch back.
fn run_lane(mut caller: Caller, work: Receiver<Work>, done: Sender<Done>) {
    for Work {
        lane,
        session,
        entries,
    } in work
    {
        let bodies: Vec<Vec<u8>> = entries
            .iter()
            .map(|entry| convert::call_to_bytes(&entry.call, &session.framework_id))
            .collect();
        let results = if let ([entry], [body]) = (&entries[..], &bodies[..]) {
            vec![caller.post(
                &session.leader,
                &session.stream_id,
                body,
                is_idempotent(&entry.call),
            )]
        } else if entries.iter().all(|entry| is_idempotent(&entry.call)) {
            caller.post_pipelined(&session.leader, &session.stream_id, &bodies)
        } else {
            caller.post_pipelined_once(&session.leader, &session.stream_id, &bodies)
        };
        let batch = Done {
            lane,
            session,
            entries,
            results,
        };
        if done.send(batch).is_err() {
            return;
        }
    }
}

/// ACCEPT is the one call that must not be sent twice.
fn is_idempotent(call: &Call) -> bool {
    !matches!(call, Call::Launch { .. })
}

/// The caller thread's state: the current session, the pending calls and
/// the outage in progress.
pub(crate) struct CallerLoop {
    calls: Receiver<Call>,
    sessions: Receiver<Session>,
    stop: Receiver<()>,
    events: Sender<MesosEvent>,
    links: LaneLinks,
    /// The newest session the reader handed over; kept until a newer one comes.
    session: Option<Session>,
    lanes: Lanes,
    /// Shutdown: send what goes through at once, wait for nothing.
    stopping: bool,
    /// Calls are failing since then; logged when it starts and when it ends.
    outage: Option<Outage>,
    failed_log: RateLimit,
    refused_log: RateLimit,
    full_log: RateLimit,
    /// Every attempt is counted here by call type and result (`settle`).
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

/// What became of one call, as `record` logs it.
#[derive(Debug)]
enum Outcome {
    /// The master took it (202).
    Delivered,
    /// It failed and goes out again after its wait.
    Retry(CallError),
    /// Reported to the state thread as `CallFailure::Refused`.
    Refused(String),
    /// Reported to the state thread as `CallFailure::OutcomeUnknown`.
    Unknown(String),
    /// A SUPPRESS whose subscription ended: dropped.
    Dropped,
}

impl CallerLoop {
    pub(crate) fn new(
        calls: Receiver<Call>,
        sessions: Receiver<Session>,
        stop: Receiver<()>,
        events: Sender<MesosEvent>,
        links: LaneLinks,
        metrics: Arc<Metrics>,
    ) -> CallerLoop {
        CallerLoop {
            calls,
            sessions,
            stop,
            events,
            links,
            session: None,
            lanes: Lanes::new(),
            stopping: false,
            outage: None,
            failed_log: RateLimit::default(),
            refused_log: RateLimit::default(),
            full_log: RateLimit::default(),
            metrics,
        }
    }

    /// Sends calls until the state side has closed the channel and every
    /// call is done, or until shutdown leaves only calls that must wait.
    pub(crate) fn run(mut self) {
        let mut calls_open = true;
        loop {
            let now = Instant::now();
            if self.start_ready(now) == Flow::Stop {
                return;
            }
            let stream = self.session.as_ref().map(|it| it.stream_id.as_str());
            if self.stopping && self.lanes.must_wait(stream, now) {
                log::warn!(
                    "mesos caller stopping with calls unsent unsent={}",
                    self.lanes.pending()
                );
                return;
            }
            if !calls_open && self.lanes.pending() == 0 {
                return;
            }
            let closed = crossbeam_channel::never();
            let inbox = if calls_open && !self.lanes.is_full() {
                &self.calls
            } else {
                if calls_open {
                    if let Some(suffix) = self.full_log.admit(now) {
                        log::warn!(
                            "mesos calls held back, the caller's queue is full pending={}{suffix}",
                            self.lanes.pending()
                        );
                    }
                }
                &closed
            };
            let timeout = match self.lanes.next_deadline(now) {
                Some(at) => crossbeam_channel::at(at),
                None => crossbeam_channel::never(),
            };
            // Idle, it still takes each new session: the reader's handover
            // channel is bounded and must never fill up while no call comes.
            select! {
                recv(inbox) -> call => match call {
                    Ok(call) => {
                        self.queue(call);
                        while !self.lanes.is_full() {
                            let Ok(call) = self.calls.try_recv() else { break };
                            self.queue(call);
                        }
                    }
                    Err(_) => calls_open = false,
                },
                recv(self.sessions) -> newer => match newer {
                    Ok(newer) => self.session = Some(newer),
                    // The reader has ended: we are shutting down.
                    Err(_) => {
                        self.stopping = true;
                        self.sessions = crossbeam_channel::never();
                    }
                },
                recv(self.links.done) -> done => {
                    let done = done.expect("the lane threads live while we hold their work channels");
                    if self.settle(done) == Flow::Stop {
                        return;
                    }
                }
                recv(self.stop) -> _ => {
                    self.stopping = true;
                    self.stop = crossbeam_channel::never();
                }
                recv(timeout) -> _ => {}
            }
        }
    }

    /// Queues a call from the state side; a copy of an ACKNOWLEDGE under way
    /// is dropped (it adds nothing).
    fn queue(&mut self, call: Call) {
        if !self.lanes.push(call) {
            log::debug!("mesos call coalesced with one under way call=ACKNOWLEDGE");
        }
    }

    /// Hands every free lane whose next call may go its batch. An ACCEPT or
    /// SUPPRESS whose subscription has ended is settled here, unsent.
    fn start_ready(&mut self, now: Instant) -> Flow {
        while let Ok(newer) = self.sessions.try_recv() {
            self.session = Some(newer);
        }
        let Some(session) = self.session.clone() else {
            return Flow::Continue;
        };
        loop {
            let batches = self.lanes.take_ready(Some(&session.stream_id), now);
            if batches.is_empty() {
                return Flow::Continue;
            }
            let mut settled_unsent = false;
            for (lane, mut entries) in batches {
                if let Some(outcome) = check_subscription(&mut entries[0], &session.stream_id) {
                    let mut entry = entries.remove(0);
                    self.record(&entry.call, &outcome, now);
                    self.lanes
                        .finish(lane, &[(entry.seq, entry.update.take())], entries);
                    if self.report(entry.call, outcome) == Flow::Stop {
                        return Flow::Stop;
                    }
                    settled_unsent = true;
                    continue;
                }
                // The rest joined the batch only on this stream
                // (`Lanes::take_ready`), and now go out on it.
                for entry in entries.iter_mut().skip(1) {
                    first_stream(entry, &session.stream_id);
                }
                let work = Work {
                    lane,
                    session: session.clone(),
                    entries,
                };
                if self.links.work[lane].send(work).is_err() {
                    log::error!("mesos lane thread gone lane={lane}");
                    return Flow::Stop;
                }
            }
            if !settled_unsent {
                return Flow::Continue;
            }
        }
    }

    /// Decides what becomes of each call of a batch that came back.
    fn settle(&mut self, done: Done) -> Flow {
        let Done {
            lane,
            session,
            entries,
            results,
        } = done;
        let now = Instant::now();
        // Answered (not failed) after the first call of the batch.
        let pipelined = results
            .iter()
            .skip(1)
            .filter(|result| matches!(result, Ok(()) | Err(CallError::Refused(_))))
            .count();
        self.metrics.count_pipelined(pipelined);
        let mut entries = entries.into_iter();
        let mut finished = Vec::new();
        let mut unfinished = Vec::new();
        for result in results {
            let mut entry = entries.next().expect("one result per call tried");
            self.metrics.count_call(&entry.call, &result);
            let outcome = match result {
                Ok(()) => Outcome::Delivered,
                Err(error) => classify(&mut entry, error, &session, now),
            };
            self.record(&entry.call, &outcome, now);
            match outcome {
                Outcome::Retry(_) => unfinished.push(entry),
                outcome => {
                    finished.push((entry.seq, entry.update.take()));
                    if self.report(entry.call, outcome) == Flow::Stop {
                        return Flow::Stop;
                    }
                }
            }
        }
        unfinished.extend(entries);
        self.lanes.finish(lane, &finished, unfinished);
        Flow::Continue
    }

    /// The one place where the outcome of each attempt at a call is known:
    /// logs it (failures at most once per `LOG_WINDOW` at warn, with the
    /// count of the others) and keeps the outage count.
    fn record(&mut self, call: &Call, outcome: &Outcome, now: Instant) {
        match outcome {
            Outcome::Delivered => {
                log::debug!("mesos call sent call={}", call.name());
                if let Some(outage) = self.outage.take() {
                    self.failed_log.take_left_out();
                    log::info!(
                        "mesos calls delivered again after_ms={} failed_attempts={}",
                        now.saturating_duration_since(outage.since).as_millis(),
                        outage.failed_attempts
                    );
                }
            }
            Outcome::Retry(error) => {
                let outage = self.outage.get_or_insert(Outage {
                    since: now,
                    failed_attempts: 0,
                });
                outage.failed_attempts += 1;
                match self.failed_log.admit(now) {
                    Some(suffix) => log::warn!(
                        "mesos call failed, retrying until delivered call={} reason={error}{suffix}",
                        call.name()
                    ),
                    None => log::debug!(
                        "mesos call failed again call={} failed_attempts={} reason={error}",
                        call.name(),
                        outage.failed_attempts
                    ),
                }
            }
            Outcome::Dropped => log::debug!(
                "mesos call dropped, its subscription ended call={}",
                call.name()
            ),
            Outcome::Refused(reason) => {
                if let Some(suffix) = self.refused_log.admit(now) {
                    log::warn!(
                        "mesos call refused call={} reason={reason}{suffix}",
                        call.name()
                    );
                }
            }
            Outcome::Unknown(reason) => log::warn!(
                "mesos call outcome unknown, not resent call={} reason={reason}",
                call.name()
            ),
        }
    }

    /// Tells the state thread of a call that failed for good; nothing for
    /// the other outcomes.
    fn report(&self, call: Call, outcome: Outcome) -> Flow {
        let failure = match outcome {
            Outcome::Refused(reason) => CallFailure::Refused(reason),
            Outcome::Unknown(reason) => CallFailure::OutcomeUnknown(reason),
            Outcome::Delivered | Outcome::Retry(_) | Outcome::Dropped => return Flow::Continue,
        };
        match self.events.send(MesosEvent::CallFailed { call, failure }) {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Stop,
        }
    }
}

/// Before an ACCEPT or SUPPRESS goes out on `stream`: `Some` when the
/// subscription it belongs to has ended, so it must not go.
fn check_subscription(entry: &mut Entry, stream: &str) -> Option<Outcome> {
    // A new subscription un-suppresses the framework, and the state thread
    // counts on that: a SUPPRESS carried over to it would leave the
    // framework suppressed with the state thread believing not (no offers
    // ever again; seen after POST /admin/reset's TEARDOWN). An ACCEPT's
    // offers were rescinded when its subscription ended.
    if first_stream(entry, stream)? == stream {
        return None;
    }
    Some(match entry.call {
        Call::Suppress => Outcome::Dropped,
        _ => {
            log::warn!(
                "mesos call not sent, its subscription ended call={}",
                entry.call.name()
            );
            Outcome::Refused(
                "not sent: the subscription its offers came from has ended".to_string(),
            )
        }
    })
}

/// The stream an ACCEPT or SUPPRESS first went out on: `stream` if this is
/// its first attempt. `None` for every other call.
fn first_stream<'a>(entry: &'a mut Entry, stream: &str) -> Option<&'a str> {
    if !matches!(entry.call, Call::Suppress | Call::Launch { .. }) {
        return None;
    }
    Some(entry.first_stream.get_or_insert_with(|| stream.to_string()))
}

/// What a failed attempt means; for a call that goes out again
/// (`Outcome::Retry`) its wait is set in `entry`.
fn classify(entry: &mut Entry, error: CallError, session: &Session, now: Instant) -> Outcome {
    let idempotent = is_idempotent(&entry.call);
    match error {
        // Sent on a session whose stream has ended: the master refuses it as
        // "not subscribed" or for a stale stream id. It did not act; send
        // again on the next session.
        CallError::Refused(_) if idempotent && session.has_ended() => {
            entry.wait = Wait::NewSession(session.stream_id.clone());
            Outcome::Retry(error)
        }
        CallError::Refused(reason) => Outcome::Refused(reason.to_string()),
        CallError::OutcomeUnknown(reason) if !idempotent => Outcome::Unknown(reason.to_string()),
        CallError::NotDelivered(_) | CallError::OutcomeUnknown(_) => {
            entry.wait = Wait::Until(now + entry.backoff.next_delay(), session.stream_id.clone());
            Outcome::Retry(error)
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
        let (links, lanes) =
            start_lanes(None, &[SocketSlot::default()]).expect("lane threads start");
        let thread = std::thread::spawn(move || {
            CallerLoop::new(calls, sessions, stop, events, links, Arc::default()).run()
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
        for lane in lanes {
            lane.join().expect("the lane ends with the caller");
        }
    }
}
