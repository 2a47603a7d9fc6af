//! Everything that speaks the Mesos v1 scheduler API: the `mesos-reader`
//! thread that keeps one subscription alive and turns its stream into
//! `MesosEvent`s, and the `mesos-caller` thread that POSTs the state thread's
//! `Call`s. Both report to the state thread through its bounded mesos inbox.
//!
//! The reader (`reader.rs`) owns the session (leader address, stream id,
//! framework id) and hands each new session to the caller (`caller.rs`) before
//! it forwards the SUBSCRIBED event, so every call the state thread makes in
//! answer is sent with the new stream id. An error no retry can fix (the
//! framework failed over to another scheduler, a SUBSCRIBE refused for a
//! reason in our flags) ends the reader and reaches `main` as a `Fatal`
//! through `Connection::fatal` and `Running::wait`; nothing here exits the
//! process.

mod backoff;
mod caller;
pub mod client;
pub mod convert;
pub mod proto;
mod reader;
pub mod recordio;

pub use backoff::Backoff;

use std::fmt;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use crate::mesos::caller::lanes::CALL_LANES;
use crate::mesos::caller::CallerLoop;
use crate::mesos::client::BasicAuth;
use crate::mesos::convert::FrameworkSettings;
use crate::mesos::reader::Reader;
use crate::metrics::Metrics;
use crate::scheduler::model::FrameworkId;
use crate::scheduler::{Call, MesosEvent};

/// The heartbeat interval we assume until SUBSCRIBED tells us the real one.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);

/// A stream that carries no event for this many heartbeat intervals is dead
/// (the Mesos docs suggest about five).
pub const MISSED_HEARTBEATS: u32 = 5;

/// Resubscription backoff: first delay, and the cap.
pub const BACKOFF_MIN: Duration = Duration::from_millis(250);
pub const BACKOFF_MAX: Duration = Duration::from_secs(15);

/// A subscription that lived this long was a success: the resubscription
/// backoff starts again from `BACKOFF_MIN`. A shorter one (SUBSCRIBED, then
/// the stream drops) counts as a failed attempt, so a master that accepts
/// and hangs up at once is backed off like one that refuses.
pub const STABLE_SUBSCRIPTION: Duration = Duration::from_secs(5);

/// 307s followed in a row before backing off (mesos-go allows 9).
pub const MAX_REDIRECTS: u32 = 9;

/// The shortest idle timeout on the event stream, whatever the heartbeat says.
pub(crate) const MIN_IDLE_TIMEOUT: Duration = Duration::from_secs(1);

/// Exit code when another scheduler took our framework over ("Framework
/// failed over"): taking it back would start a ping-pong between the two, so
/// the unit file must not restart on it (`RestartPreventExitStatus=`).
pub const EXIT_FAILED_OVER: u8 = 4;

/// Exit code when the master refuses our SUBSCRIBE for a reason in our flags
/// (a principal the framework cannot change to, a role it does not accept):
/// retrying cannot fix it, so neither can a restart.
pub const EXIT_SUBSCRIBE_REFUSED: u8 = 5;

/// Why the connection to Mesos cannot go on and the process must stop.
#[derive(Clone, Debug, PartialEq)]
pub enum Fatal {
    /// Another scheduler subscribed with our framework id and the master gave
    /// it the framework.
    FailedOver { framework_id: String },
    /// The master refuses our SUBSCRIBE for good: `message` is its text,
    /// `flag` the one to fix and `why` what the refusal means.
    SubscribeRefused {
        message: String,
        flag: &'static str,
        why: &'static str,
    },
}

impl Fatal {
    /// The process exit code that tells the supervisor what happened.
    pub fn exit_code(&self) -> u8 {
        match self {
            Fatal::FailedOver { .. } => EXIT_FAILED_OVER,
            Fatal::SubscribeRefused { .. } => EXIT_SUBSCRIBE_REFUSED,
        }
    }
}

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fatal::FailedOver { framework_id } => write!(
                f,
                "framework {framework_id} failed over to another scheduler: another process subscribed with our framework id and the master gave the framework to it; stopping instead of taking it back (two schedulers would displace each other for ever)"
            ),
            Fatal::SubscribeRefused { message, flag, why } => write!(
                f,
                "the master refuses to subscribe us: {message:?}; check {flag}: {why}; retrying cannot change that, so stopping"
            ),
        }
    }
}

impl std::error::Error for Fatal {}

/// Everything the reader needs to subscribe.
#[derive(Clone, Debug)]
pub struct MesosConfig {
    /// host:port of each master, tried in turn (round robin); a non-leading
    /// master redirects us to the leader. Never empty.
    pub masters: Vec<String>,
    pub framework: FrameworkSettings,
    /// Resubscribe with this id (restart with stored state); `None` registers anew.
    pub framework_id: Option<FrameworkId>,
    pub auth: Option<BasicAuth>,
}

/// The current subscription, as the caller needs it.
#[derive(Clone, Debug)]
pub(crate) struct Session {
    leader: String,
    stream_id: String,
    framework_id: FrameworkId,
    /// Set by the reader when this session's event stream ends: a 4xx on a
    /// call may then mean "stale session", not "refused".
    ended: Arc<AtomicBool>,
}

/// The running reader and caller threads.
pub struct Connection {
    reader: Option<JoinHandle<()>>,
    caller: Option<JoinHandle<()>>,
    stop: Option<Sender<()>>,
    /// Where the reader reports a `Fatal` error (at most one).
    fatal: Receiver<Fatal>,
    /// The `mesos-lane-N` threads.
    lanes: Vec<JoinHandle<()>>,
    /// The event stream's socket and each lane's socket of the call in progress.
    sockets: Vec<client::SocketSlot>,
}

impl Connection {
    /// Starts `mesos-reader` and `mesos-caller`. Events go to `events`; the
    /// caller sends what arrives on `calls` and stops when it closes or at
    /// `stop`, and counts each attempt in `metrics`.
    pub fn start(
        config: MesosConfig,
        events: Sender<MesosEvent>,
        calls: Receiver<Call>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Connection> {
        let (stop_sender, stop_receiver) = crossbeam_channel::bounded::<()>(0);
        let (session_sender, session_receiver) =
            crossbeam_channel::bounded::<Session>(SESSION_CAPACITY);
        let socket = client::SocketSlot::default();
        let call_sockets: Vec<_> = (0..CALL_LANES)
            .map(|_| client::SocketSlot::default())
            .collect();
        let (links, lanes) = caller::start_lanes(config.auth.clone(), &call_sockets)?;
        let caller_events = events.clone();
        let caller_stop = stop_receiver.clone();
        let caller = thread::Builder::new()
            .name("mesos-caller".to_string())
            .spawn(move || {
                CallerLoop::new(
                    calls,
                    session_receiver,
                    caller_stop,
                    caller_events,
                    links,
                    metrics,
                )
                .run()
            })?;
        let reader_socket = socket.clone();
        let (fatal_sender, fatal) = crossbeam_channel::bounded::<Fatal>(1);
        let reader = thread::Builder::new()
            .name("mesos-reader".to_string())
            .spawn(move || {
                Reader::new(
                    config,
                    events,
                    session_sender,
                    fatal_sender,
                    stop_receiver,
                    reader_socket,
                )
                .run()
            })?;
        Ok(Connection {
            reader: Some(reader),
            caller: Some(caller),
            stop: Some(stop_sender),
            fatal,
            lanes,
            sockets: std::iter::once(socket).chain(call_sockets).collect(),
        })
    }

    /// Receives the error that ended the connection for good, if one does;
    /// disconnected once the reader has ended without one.
    pub fn fatal(&self) -> Receiver<Fatal> {
        self.fatal.clone()
    }

    /// Asks both threads to stop without waiting: the reader ends, and the
    /// caller still sends what it can send at once but no longer waits for
    /// a session or a backoff (a caller waiting for a master that is gone
    /// would otherwise hold up the journal, and with it the shutdown).
    pub fn stop(&mut self) {
        drop(self.stop.take());
    }

    /// Stops both threads (closing their sockets so blocked reads return) and
    /// joins them. The caller may still be sending what the journal hands it,
    /// so call this after the journal has ended.
    pub fn shutdown(mut self) {
        self.stop_threads();
    }

    fn stop_threads(&mut self) {
        self.stop();
        for slot in &self.sockets {
            slot.close();
        }
        // The caller first: its end closes the lanes' work channels.
        let lanes = std::mem::take(&mut self.lanes);
        for handle in [self.reader.take(), self.caller.take()]
            .into_iter()
            .flatten()
            .chain(lanes)
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

pub(crate) fn is_stopped(stop: &Receiver<()>) -> bool {
    matches!(stop.try_recv(), Err(TryRecvError::Disconnected))
}
