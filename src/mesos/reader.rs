//! The `mesos-reader` thread: keeps one subscription alive and turns its event
//! stream into `MesosEvent`s for the state thread.
//!
//! `Reader` owns everything the subscription needs between attempts (the
//! master to try next, the framework id, the heartbeat interval, the backoff)
//! so one attempt is one method call: `run` loops over `subscribe_once`,
//! which subscribes, reads the stream until it ends, and says what to do next.
//! `on_subscribed` hands the new session to the caller *before* SUBSCRIBED is
//! forwarded, so the calls that answer it carry the new stream id.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::lograte::RateLimit;
use crate::mesos::backoff::Backoff;
use crate::mesos::client::{self, SocketSlot, Subscription};
use crate::mesos::convert::{self, Decoded};
use crate::mesos::{
    is_stopped, recordio, Fatal, MesosConfig, Session, BACKOFF_MAX, BACKOFF_MIN, DEFAULT_HEARTBEAT,
    MAX_REDIRECTS, MIN_IDLE_TIMEOUT, MISSED_HEARTBEATS, STABLE_SUBSCRIPTION,
};
use crate::scheduler::model::FrameworkId;
use crate::scheduler::MesosEvent;

/// What one subscription attempt ended with.
enum Attempt {
    /// Shutdown was asked for, or the state thread is gone.
    Stop,
    /// A 307: subscribe to the named leader at once.
    Redirected,
    /// The attempt failed or the stream ended; back off and try again.
    Lost(String),
}

/// The reader's state across subscription attempts.
pub(crate) struct Reader {
    config: MesosConfig,
    events: Sender<MesosEvent>,
    sessions: Sender<Session>,
    fatal: Sender<Fatal>,
    stop: Receiver<()>,
    /// The open stream's socket, so shutdown can close it from outside.
    socket_slot: SocketSlot,
    /// Where the next SUBSCRIBE goes: a configured master or a redirect target.
    master: String,
    /// The configured master `master` came from (index into `config.masters`).
    index: usize,
    /// How long to wait before the next SUBSCRIBE.
    pace: Pace,
    /// Resubscribe with this id; `None` registers anew.
    framework_id: Option<FrameworkId>,
    heartbeat: Duration,
    /// 307s followed in a row.
    redirects: u32,
    /// When the current outage began; a failure is logged once per outage.
    failing_since: Option<Instant>,
    /// The current session's "stream ended" flag, shared with the caller.
    stream_ended: Option<Arc<AtomicBool>>,
    /// "subscription lost" lines, at most one per `lograte::LOG_WINDOW`.
    lost_log: RateLimit,
}

impl Reader {
    pub(crate) fn new(
        config: MesosConfig,
        events: Sender<MesosEvent>,
        sessions: Sender<Session>,
        fatal: Sender<Fatal>,
        stop: Receiver<()>,
        socket_slot: SocketSlot,
    ) -> Reader {
        Reader {
            master: config.masters.first().cloned().unwrap_or_default(),
            index: 0,
            pace: Pace::new(config.masters.len()),
            framework_id: config.framework_id.clone(),
            config,
            events,
            sessions,
            fatal,
            stop,
            socket_slot,
            heartbeat: DEFAULT_HEARTBEAT,
            redirects: 0,
            failing_since: None,
            stream_ended: None,
            lost_log: RateLimit::default(),
        }
    }

    /// Subscribes until stopped: after each lost subscription it tells the
    /// state thread, backs off, and tries again.
    pub(crate) fn run(mut self) {
        loop {
            if is_stopped(&self.stop) {
                return;
            }
            let reason = match self.subscribe_once() {
                Attempt::Stop => return,
                Attempt::Redirected => continue,
                Attempt::Lost(_) if is_stopped(&self.stop) => return,
                Attempt::Lost(reason) => reason,
            };
            if self.failing_since.is_none() {
                let now = Instant::now();
                // A master that takes SUBSCRIBE and drops the stream at once
                // starts a new outage each time: one line per window.
                match self.lost_log.admit(now) {
                    Some(suffix) => log::warn!(
                        "mesos subscription lost master={} reason={reason}{suffix}",
                        self.master
                    ),
                    None => log::debug!(
                        "mesos subscription lost master={} reason={reason}",
                        self.master
                    ),
                }
                self.failing_since = Some(now);
            } else {
                log::debug!(
                    "mesos subscription still down master={} reason={reason}",
                    self.master
                );
            }
            if self
                .events
                .send(MesosEvent::Disconnected { reason })
                .is_err()
            {
                return;
            }
            if let Some(delay) = self.pace.lost(Instant::now()) {
                if self.stop.recv_timeout(delay).is_ok() || is_stopped(&self.stop) {
                    return;
                }
            }
            // The leader may have moved (or been a redirect target that is
            // gone): go on from the configured list.
            self.redirects = 0;
            self.index = (self.index + 1) % self.config.masters.len().max(1);
            self.master = self
                .config
                .masters
                .get(self.index)
                .cloned()
                .unwrap_or_default();
        }
    }

    /// One SUBSCRIBE and, when it is accepted, its whole event stream.
    fn subscribe_once(&mut self) -> Attempt {
        let call = convert::subscribe_to_bytes(&self.config.framework, self.framework_id.as_ref());
        let idle_timeout = (self.heartbeat * MISSED_HEARTBEATS).max(MIN_IDLE_TIMEOUT);
        let subscription =
            match client::subscribe(&self.master, &call, self.config.auth.as_ref(), idle_timeout) {
                Ok(subscription) => subscription,
                Err(client::Error::Redirect { location }) => {
                    self.redirects += 1;
                    log::info!(
                        "following redirect to leading master from={} to={location}",
                        self.master
                    );
                    self.master = location;
                    if self.redirects <= MAX_REDIRECTS {
                        return Attempt::Redirected;
                    }
                    self.redirects = 0;
                    return Attempt::Lost(format!("more than {MAX_REDIRECTS} redirects in a row"));
                }
                Err(err) => return Attempt::Lost(err.to_string()),
            };
        self.socket_slot.hold(&subscription.socket);
        // A shutdown that raced with the connect must still unblock us.
        if is_stopped(&self.stop) {
            return Attempt::Stop;
        }
        let ended = self.read_stream(subscription);
        if let Some(flag) = self.stream_ended.take() {
            flag.store(true, Ordering::SeqCst);
        }
        self.socket_slot.release();
        self.redirects = 0;
        ended
    }

    /// Reads events until the stream ends.
    fn read_stream(&mut self, mut subscription: Subscription) -> Attempt {
        loop {
            let record = match recordio::read_record(&mut subscription.body, recordio::MAX_RECORD) {
                Ok(Some(record)) => record,
                Ok(None) => return Attempt::Lost("stream ended".to_string()),
                Err(err) => return Attempt::Lost(err.to_string()),
            };
            let decoded = match convert::event_from_bytes(&record) {
                Ok(decoded) => decoded,
                Err(err) => return Attempt::Lost(err.to_string()),
            };
            let event = match decoded {
                Decoded::Subscribed {
                    framework_id,
                    heartbeat_seconds,
                } => match self.on_subscribed(&subscription, framework_id, heartbeat_seconds) {
                    Ok(Some(event)) => event,
                    Ok(None) => return Attempt::Stop,
                    Err(reason) => return Attempt::Lost(reason),
                },
                Decoded::Heartbeat => continue,
                Decoded::Offers(offers) => MesosEvent::Offers(offers),
                Decoded::Rescind(offer_id) => MesosEvent::Rescind(offer_id),
                Decoded::Update(update) => MesosEvent::Update(update),
                Decoded::AgentLost(agent_id) => MesosEvent::AgentLost(agent_id),
                Decoded::Ignored(kind) => {
                    log::debug!("ignored event type={kind}");
                    continue;
                }
                Decoded::Error(message) => return self.on_error(message),
            };
            if self.events.send(event).is_err() {
                return Attempt::Stop;
            }
        }
    }

    /// SUBSCRIBED: adopt the heartbeat and framework id, and hand the new
    /// session to the caller. `Ok(None)` when the caller is gone.
    fn on_subscribed(
        &mut self,
        subscription: &Subscription,
        framework_id: FrameworkId,
        heartbeat_seconds: Option<f64>,
    ) -> Result<Option<MesosEvent>, String> {
        if let Some(seconds) = heartbeat_seconds.filter(|it| it.is_finite() && *it > 0.0) {
            self.heartbeat = Duration::from_secs_f64(seconds.min(3600.0));
            let idle_timeout = (self.heartbeat * MISSED_HEARTBEATS).max(MIN_IDLE_TIMEOUT);
            subscription
                .socket
                .set_read_timeout(Some(idle_timeout))
                .map_err(|err| err.to_string())?;
        }
        log::info!(
            "subscribed framework={} master={} stream={}",
            framework_id.0,
            self.master,
            subscription.stream_id
        );
        if let Some(since) = self.failing_since.take() {
            log::info!(
                "mesos subscription back after_ms={}",
                since.elapsed().as_millis()
            );
        }
        self.pace.subscribed(Instant::now());
        self.framework_id = Some(framework_id.clone());
        let ended = Arc::new(AtomicBool::new(false));
        if let Some(previous) = self.stream_ended.replace(Arc::clone(&ended)) {
            previous.store(true, Ordering::SeqCst);
        }
        let session = Session {
            leader: self.master.clone(),
            stream_id: subscription.stream_id.clone(),
            framework_id: framework_id.clone(),
            ended,
        };
        if self.sessions.send(session).is_err() {
            return Ok(None);
        }
        Ok(Some(MesosEvent::Subscribed { framework_id }))
    }

    /// An ERROR event: the master ends the stream after it.
    fn on_error(&mut self, message: String) -> Attempt {
        log::error!("master sent error message={message:?}");
        match classify_error(&message) {
            ErrorKind::FailedOver => {
                let framework_id = self
                    .framework_id
                    .as_ref()
                    .map_or_else(String::new, |id| id.0.clone());
                self.give_up(Fatal::FailedOver { framework_id })
            }
            ErrorKind::Permanent { flag, why } => {
                self.give_up(Fatal::SubscribeRefused { message, flag, why })
            }
            // A removed framework id is permanent for this master: register anew.
            ErrorKind::Removed => {
                self.framework_id = None;
                if self.events.send(MesosEvent::FrameworkRemoved).is_err() {
                    return Attempt::Stop;
                }
                Attempt::Lost(format!("master error: {message}"))
            }
            ErrorKind::Transient => Attempt::Lost(format!("master error: {message}")),
        }
    }

    /// Ends the reader for good: the error goes to `main` (through
    /// `Running::wait`), which stops the process with its exit code.
    fn give_up(&mut self, fatal: Fatal) -> Attempt {
        log::error!("{fatal}");
        // Capacity one and only one sender: the first error is kept.
        let _ = self.fatal.try_send(fatal);
        Attempt::Stop
    }
}

/// When the next SUBSCRIBE goes out. Each failed attempt moves on to the
/// next configured master at once; only a full round of failures (no master
/// reachable, or none with a leader) waits for the backoff. A subscription
/// is a success only once it has lived `STABLE_SUBSCRIPTION`; one whose
/// stream ends sooner is a failed attempt like a refused connect, so a
/// master that answers SUBSCRIBED and drops the stream at once is not asked
/// again at once (each SUBSCRIBED also reconciles every task).
struct Pace {
    backoff: Backoff,
    masters: usize,
    /// Failed attempts in the current round of the configured masters.
    failed_in_round: usize,
    /// When the current subscription's SUBSCRIBED arrived.
    subscribed_at: Option<Instant>,
}

impl Pace {
    fn new(masters: usize) -> Pace {
        Pace {
            backoff: Backoff::new(BACKOFF_MIN, BACKOFF_MAX),
            masters: masters.max(1),
            failed_in_round: 0,
            subscribed_at: None,
        }
    }

    /// SUBSCRIBED arrived at `now`.
    fn subscribed(&mut self, now: Instant) {
        self.subscribed_at = Some(now);
    }

    /// An attempt ended at `now` (it failed, or its stream ended): the wait
    /// before the next SUBSCRIBE, or `None` to go on at once.
    fn lost(&mut self, now: Instant) -> Option<Duration> {
        let lived = self
            .subscribed_at
            .take()
            .map(|at| now.saturating_duration_since(at));
        if lived.is_some_and(|lived| lived >= STABLE_SUBSCRIPTION) {
            self.backoff.reset();
            self.failed_in_round = 0;
        }
        self.failed_in_round += 1;
        if self.failed_in_round < self.masters {
            return None;
        }
        self.failed_in_round = 0;
        Some(self.backoff.next_delay())
    }
}

/// What an ERROR event means for the subscription.
#[derive(Debug, PartialEq)]
enum ErrorKind {
    /// Another scheduler subscribed with our framework id.
    FailedOver,
    /// Our framework id is gone for good; register anew.
    Removed,
    /// The master refuses our SUBSCRIBE for a reason in our flags, which
    /// retrying cannot change: `flag` is the one to fix.
    Permanent {
        flag: &'static str,
        why: &'static str,
    },
    /// Anything else: resubscribe after a backoff.
    Transient,
}

/// Sorts an ERROR message by the texts a Mesos 1.x master sends
/// (`src/master/master.cpp`, `src/master/validation.cpp`,
/// `src/common/roles.cpp`).
fn classify_error(message: &str) -> ErrorKind {
    let lower = message.to_ascii_lowercase();
    if lower.contains("framework failed over") {
        ErrorKind::FailedOver
    } else if lower.contains("framework has been removed") {
        ErrorKind::Removed
    } else if lower.contains("principal") {
        ErrorKind::Permanent {
            flag: "--principal",
            why: "a registered framework keeps the principal it was registered with; run with that principal, or register a new framework (another --state-dir)",
        }
    } else if lower.contains("role") {
        ErrorKind::Permanent {
            flag: "--role",
            why: "the master does not accept this role (invalid, not in its --roles, or suppressed roles outside the framework's roles)",
        }
    } else if lower.contains("not authorized") || lower.contains("unauthorized") {
        ErrorKind::Permanent {
            flag: "--principal",
            why: "the master's ACLs do not let this principal register this framework",
        }
    } else {
        ErrorKind::Transient
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One attempt after another with `masters` configured: each is
    /// `Some(ms)` when it got SUBSCRIBED and its stream lived `ms`, `None`
    /// when it failed before; `waits` is each attempt's wait after it
    /// (`None`: at once; `Some(cap)`: jittered within `[cap/2, cap]` ms).
    #[track_caller]
    fn check(masters: usize, attempts: &[Option<u64>], waits: &[Option<u64>]) {
        let mut pace = Pace::new(masters);
        let mut now = Instant::now();
        let mut got = Vec::new();
        for lived in attempts {
            if let Some(lived) = lived {
                pace.subscribed(now);
                now += Duration::from_millis(*lived);
            }
            let wait = pace.lost(now);
            now += wait.unwrap_or_default();
            got.push(wait);
        }
        assert_eq!(got.len(), waits.len(), "{attempts:?}");
        for (n, (wait, cap)) in got.iter().zip(waits).enumerate() {
            let within = match (wait, cap) {
                (None, None) => true,
                (Some(wait), Some(cap)) => {
                    let cap = Duration::from_millis(*cap);
                    *wait <= cap && *wait >= cap / 2
                }
                _ => false,
            };
            assert!(
                within,
                "attempt {n} of {attempts:?}: {got:?}, wanted {waits:?}"
            );
        }
    }

    #[test]
    fn only_a_subscription_that_lived_resets_the_backoff() {
        let stable = u64::try_from(STABLE_SUBSCRIPTION.as_millis()).expect("ms");
        // No master answers: the backoff doubles up to its cap.
        check(
            1,
            &[None; 8],
            &[250, 500, 1000, 2000, 4000, 8000, 15000, 15000].map(Some),
        );
        // SUBSCRIBED and dropped at once is no better.
        check(1, &[Some(0); 5], &[250, 500, 1000, 2000, 4000].map(Some));
        check(1, &[Some(stable - 1); 3], &[250, 500, 1000].map(Some));
        // A subscription that lived starts the backoff again.
        check(
            1,
            &[None, None, None, Some(stable), None],
            &[250, 500, 1000, 250, 500].map(Some),
        );
        // Several masters: the next one at once, a full round backs off,
        // whether the attempts failed or their streams dropped at once.
        check(
            2,
            &[None, None, None, None],
            &[None, Some(250), None, Some(500)],
        );
        check(
            2,
            &[Some(0), Some(0), Some(0), Some(0), Some(0), Some(0)],
            &[None, Some(250), None, Some(500), None, Some(1000)],
        );
        // A long subscription lost: the next master at once, then a fresh round.
        check(
            3,
            &[None, None, None, Some(stable * 10), None, None],
            &[None, None, Some(250), None, None, Some(250)],
        );
    }

    #[test]
    fn error_messages_are_sorted_by_what_retrying_can_fix() {
        let check = |message: &str, expected: &str| {
            let kind = match classify_error(message) {
                ErrorKind::FailedOver => "failed over".to_string(),
                ErrorKind::Removed => "removed".to_string(),
                ErrorKind::Permanent { flag, .. } => format!("permanent {flag}"),
                ErrorKind::Transient => "transient".to_string(),
            };
            assert_eq!(kind, expected, "{message}");
        };
        check("Framework failed over", "failed over");
        check("Framework has been removed", "removed");
        check(
            "Changing framework's principal is not allowed.",
            "permanent --principal",
        );
        check(
            "Authenticated principal 'a' does not match principal 'b' set in `FrameworkInfo`",
            "permanent --principal",
        );
        check(
            "Role name 'a b' is invalid because it contains slash, backspace or whitespace",
            "permanent --role",
        );
        check(
            "Role 'x' is not present in the master's --roles",
            "permanent --role",
        );
        check(
            "Suppressed roles [\"x\"] are not contained in the set of roles",
            "permanent --role",
        );
        check(
            "Not authorized to register as framework",
            "permanent --principal",
        );
        check("Master is recovering", "transient");
        check("", "transient");
    }
}
