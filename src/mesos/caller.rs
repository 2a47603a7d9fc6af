//! The `mesos-caller` thread: POSTs the state thread's `Call`s with the
//! current session's stream id and reports the calls that did not take
//! effect as `MesosEvent::CallFailed`.

use std::thread;

use crossbeam_channel::{Receiver, Sender};

use crate::mesos::backoff::Backoff;
use crate::mesos::client::Caller;
use crate::mesos::{convert, Session, BACKOFF_MAX, BACKOFF_MIN, MAX_CALL_ATTEMPTS};
use crate::scheduler::{Call, CallFailure, MesosEvent};

pub(crate) fn run_caller(
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
