//! Everything that speaks the Mesos v1 scheduler API: the `mesos-reader`
//! thread that keeps one subscription alive and turns its stream into
//! `MesosEvent`s, and the `mesos-caller` thread that POSTs the state thread's
//! `Call`s. Both report to the state thread through its bounded mesos inbox.
//!
//! The reader owns the session (leader address, stream id, framework id) and
//! hands each new session to the caller before it forwards the SUBSCRIBED
//! event, so every call the state thread makes in answer is sent with the new
//! stream id.

pub mod client;
pub mod convert;
pub mod proto;
pub mod recordio;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::TcpStream;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use crate::mesos::client::{BasicAuth, Caller};
use crate::mesos::convert::{Decoded, FrameworkSettings};
use crate::scheduler::model::FrameworkId;
use crate::scheduler::{Call, CallFailure, MesosEvent};

/// The heartbeat interval we assume until SUBSCRIBED tells us the real one.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);

/// A stream that carries no event for this many heartbeat intervals is dead
/// (the Mesos docs suggest about five).
pub const MISSED_HEARTBEATS: u32 = 5;

/// Resubscription backoff: first delay, and the cap.
pub const BACKOFF_MIN: Duration = Duration::from_millis(250);
pub const BACKOFF_MAX: Duration = Duration::from_secs(15);

/// 307s followed in a row before backing off (mesos-go allows 9).
pub const MAX_REDIRECTS: u32 = 9;

/// Attempts for one call when the master answers 503 or the connection fails.
pub const MAX_CALL_ATTEMPTS: u32 = 3;

/// The shortest idle timeout on the event stream, whatever the heartbeat says.
const MIN_IDLE_TIMEOUT: Duration = Duration::from_secs(1);

/// Everything the reader needs to subscribe.
#[derive(Clone, Debug)]
pub struct MesosConfig {
    /// host:port of a master; redirects move us to the leader.
    pub master: String,
    pub framework: FrameworkSettings,
    /// Resubscribe with this id (restart with stored state); `None` registers anew.
    pub framework_id: Option<FrameworkId>,
    pub auth: Option<BasicAuth>,
}

/// The current subscription, as the caller needs it.
#[derive(Clone, Debug)]
struct Session {
    leader: String,
    stream_id: String,
    framework_id: FrameworkId,
}

/// The running reader and caller threads.
pub struct Connection {
    reader: Option<JoinHandle<()>>,
    caller: Option<JoinHandle<()>>,
    stop: Option<Sender<()>>,
    socket: Arc<Mutex<Option<TcpStream>>>,
}

impl Connection {
    /// Starts `mesos-reader` and `mesos-caller`. Events go to `events`; the
    /// caller sends what arrives on `calls` and stops when it closes.
    pub fn start(
        config: MesosConfig,
        events: Sender<MesosEvent>,
        calls: Receiver<Call>,
    ) -> std::io::Result<Connection> {
        let (stop_sender, stop_receiver) = crossbeam_channel::bounded::<()>(0);
        let (session_sender, session_receiver) =
            crossbeam_channel::bounded::<Session>(SESSION_CAPACITY);
        let socket = Arc::new(Mutex::new(None));
        let caller_events = events.clone();
        let auth = config.auth.clone();
        let caller = thread::Builder::new()
            .name("mesos-caller".to_string())
            .spawn(move || run_caller(Caller::new(auth), calls, session_receiver, caller_events))?;
        let reader_socket = Arc::clone(&socket);
        let reader = thread::Builder::new()
            .name("mesos-reader".to_string())
            .spawn(move || {
                run_reader(config, events, session_sender, stop_receiver, reader_socket)
            })?;
        Ok(Connection {
            reader: Some(reader),
            caller: Some(caller),
            stop: Some(stop_sender),
            socket,
        })
    }

    /// Stops the reader (closing its socket so a blocked read returns) and
    /// joins both threads. The caller stops once the state thread has dropped
    /// its sender, so call this after the state thread has ended.
    pub fn shutdown(mut self) {
        self.stop_threads();
    }

    fn stop_threads(&mut self) {
        drop(self.stop.take());
        if let Some(socket) = self
            .socket
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            client::close(socket);
        }
        for handle in [self.reader.take(), self.caller.take()]
            .into_iter()
            .flatten()
        {
            if handle.join().is_err() {
                log::error!("mesos thread panicked");
            }
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.stop_threads();
    }
}

/// Sessions in flight from reader to caller; only the newest matters.
const SESSION_CAPACITY: usize = 16;

fn run_reader(
    config: MesosConfig,
    events: Sender<MesosEvent>,
    sessions: Sender<Session>,
    stop: Receiver<()>,
    socket_slot: Arc<Mutex<Option<TcpStream>>>,
) {
    let mut master = config.master.clone();
    let mut framework_id = config.framework_id.clone();
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
    let mut redirects = 0;
    let mut heartbeat = DEFAULT_HEARTBEAT;
    // Log a failure once per outage, not on every retry.
    let mut failing_since: Option<Instant> = None;
    loop {
        if is_stopped(&stop) {
            return;
        }
        let call = convert::subscribe_to_bytes(&config.framework, framework_id.as_ref());
        let idle_timeout = (heartbeat * MISSED_HEARTBEATS).max(MIN_IDLE_TIMEOUT);
        let outcome = match client::subscribe(&master, &call, config.auth.as_ref(), idle_timeout) {
            Ok(subscription) => {
                *socket_slot.lock().unwrap_or_else(PoisonError::into_inner) =
                    subscription.socket.try_clone().ok();
                // A shutdown that raced with the connect must still unblock us.
                if is_stopped(&stop) {
                    return;
                }
                let ended = read_stream(
                    subscription,
                    &master,
                    &mut framework_id,
                    &mut heartbeat,
                    &events,
                    &sessions,
                    &mut backoff,
                    &mut failing_since,
                );
                *socket_slot.lock().unwrap_or_else(PoisonError::into_inner) = None;
                redirects = 0;
                ended
            }
            Err(client::Error::Redirect { location }) => {
                redirects += 1;
                log::info!("following redirect to leading master from={master} to={location}");
                master = location;
                if redirects <= MAX_REDIRECTS {
                    continue;
                }
                redirects = 0;
                Err(format!("more than {MAX_REDIRECTS} redirects in a row"))
            }
            Err(err) => Err(err.to_string()),
        };
        let reason = match outcome {
            Ok(()) | Err(_) if is_stopped(&stop) => return,
            Ok(()) => "stream ended".to_string(),
            Err(reason) => reason,
        };
        if failing_since.is_none() {
            log::warn!("mesos subscription lost master={master} reason={reason}");
            failing_since = Some(Instant::now());
        } else {
            log::debug!("mesos subscription still down master={master} reason={reason}");
        }
        if events.send(MesosEvent::Disconnected { reason }).is_err() {
            return;
        }
        let delay = backoff.next_delay();
        if stop.recv_timeout(delay).is_ok() || is_stopped(&stop) {
            return;
        }
        // After a failed attempt on a redirect target, go back to the
        // configured master: the leader may have moved again.
        if redirects == 0 {
            master = config.master.clone();
        }
    }
}

/// Reads events until the stream ends. `Ok` for a clean end, `Err` with the
/// reason otherwise.
#[allow(clippy::too_many_arguments)]
fn read_stream(
    mut subscription: client::Subscription,
    master: &str,
    framework_id: &mut Option<FrameworkId>,
    heartbeat: &mut Duration,
    events: &Sender<MesosEvent>,
    sessions: &Sender<Session>,
    backoff: &mut Backoff,
    failing_since: &mut Option<Instant>,
) -> Result<(), String> {
    loop {
        let record = match recordio::read_record(&mut subscription.body, recordio::MAX_RECORD) {
            Ok(Some(record)) => record,
            Ok(None) => return Ok(()),
            Err(err) => return Err(err.to_string()),
        };
        let decoded = convert::event_from_bytes(&record).map_err(|err| err.to_string())?;
        let event = match decoded {
            Decoded::Subscribed {
                framework_id: new_id,
                heartbeat_seconds,
            } => {
                if let Some(seconds) = heartbeat_seconds.filter(|it| it.is_finite() && *it > 0.0) {
                    *heartbeat = Duration::from_secs_f64(seconds.min(3600.0));
                    let idle_timeout = (*heartbeat * MISSED_HEARTBEATS).max(MIN_IDLE_TIMEOUT);
                    subscription
                        .socket
                        .set_read_timeout(Some(idle_timeout))
                        .map_err(|err| err.to_string())?;
                }
                log::info!(
                    "subscribed framework={} master={master} stream={}",
                    new_id.0,
                    subscription.stream_id
                );
                if let Some(since) = failing_since.take() {
                    log::info!(
                        "mesos subscription back after_ms={}",
                        since.elapsed().as_millis()
                    );
                }
                backoff.reset();
                *framework_id = Some(new_id.clone());
                let session = Session {
                    leader: master.to_string(),
                    stream_id: subscription.stream_id.clone(),
                    framework_id: new_id.clone(),
                };
                if sessions.send(session).is_err() {
                    return Ok(());
                }
                MesosEvent::Subscribed {
                    framework_id: new_id,
                }
            }
            Decoded::Heartbeat => continue,
            Decoded::Offers(offers) => MesosEvent::Offers(offers),
            Decoded::Rescind(offer_id) => MesosEvent::Rescind(offer_id),
            Decoded::Update(update) => MesosEvent::Update(update),
            Decoded::AgentLost(agent_id) => MesosEvent::AgentLost(agent_id),
            Decoded::Ignored(kind) => {
                log::debug!("ignored event type={kind}");
                continue;
            }
            Decoded::Error(message) => {
                log::error!("master sent error message={message:?}");
                // A removed framework id is permanent for this master: register anew.
                if message.contains("Framework has been removed") {
                    *framework_id = None;
                    let _ = events.send(MesosEvent::FrameworkRemoved);
                }
                return Err(format!("master error: {message}"));
            }
        };
        if events.send(event).is_err() {
            return Ok(());
        }
    }
}

fn run_caller(
    caller: Caller,
    calls: Receiver<Call>,
    sessions: Receiver<Session>,
    events: Sender<MesosEvent>,
) {
    let mut session: Option<Session> = None;
    for call in calls {
        while let Ok(newer) = sessions.try_recv() {
            session = Some(newer);
        }
        let result = match &session {
            Some(current) => send_with_retry(&caller, current, &call),
            None => Err(CallError {
                reason: "not subscribed".to_string(),
                master_gone: false,
            }),
        };
        if let Err(CallError {
            reason,
            master_gone,
        }) = result
        {
            // The master is unreachable: calls queued behind this one fail
            // at once, not one timeout each, until the reader resubscribes.
            if master_gone {
                session = None;
            }
            log::warn!(
                "mesos call failed call={} reason={reason}",
                call_name(&call)
            );
            if events
                .send(MesosEvent::CallFailed {
                    call,
                    failure: CallFailure::Refused(reason),
                })
                .is_err()
            {
                return;
            }
        }
    }
}

/// Why a call was not delivered; `master_gone` when the master could not be reached.
struct CallError {
    reason: String,
    master_gone: bool,
}

fn send_with_retry(caller: &Caller, session: &Session, call: &Call) -> Result<(), CallError> {
    let bytes = convert::call_to_bytes(call, &session.framework_id);
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
    let mut attempt = 1;
    loop {
        match caller.post(&session.leader, &session.stream_id, &bytes) {
            Ok(()) => {
                log::debug!("mesos call sent call={}", call_name(call));
                return Ok(());
            }
            Err(err) if err.is_retryable() && attempt < MAX_CALL_ATTEMPTS => {
                attempt += 1;
                thread::sleep(backoff.next_delay());
            }
            Err(err) => {
                return Err(CallError {
                    master_gone: err.is_retryable(),
                    reason: err.to_string(),
                })
            }
        }
    }
}

fn call_name(call: &Call) -> &'static str {
    match call {
        Call::Launch { .. } => "ACCEPT",
        Call::Decline { .. } => "DECLINE",
        Call::Kill { .. } => "KILL",
        Call::Acknowledge { .. } => "ACKNOWLEDGE",
        Call::Reconcile(_) => "RECONCILE",
        Call::Suppress => "SUPPRESS",
        Call::Revive => "REVIVE",
        Call::Teardown => "TEARDOWN",
    }
}

fn is_stopped(stop: &Receiver<()>) -> bool {
    matches!(stop.try_recv(), Err(TryRecvError::Disconnected))
}

/// Capped exponential backoff with full jitter.
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
    random: RandomState,
    draws: u64,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            current: min,
            random: RandomState::new(),
            draws: 0,
        }
    }

    /// A delay in [current/2, current], then doubles `current` up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let mut hasher = self.random.build_hasher();
        hasher.write_u64(self.draws);
        self.draws += 1;
        let fraction = (hasher.finish() % 1000) as f64 / 1000.0;
        let delay = self.current.mul_f64(0.5 + fraction / 2.0);
        self.current = (self.current * 2).min(self.max);
        delay
    }

    pub fn reset(&mut self) {
        self.current = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let caps = [100, 200, 400, 800, 1000, 1000];
        for cap in caps {
            let delay = backoff.next_delay();
            assert!(
                delay <= Duration::from_millis(cap) && delay >= Duration::from_millis(cap / 2),
                "{delay:?} for cap {cap}"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }
}
