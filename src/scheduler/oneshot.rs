//! The way back for one `ApiCommand`: a slot for a single value that the
//! asking thread sleeps on (a `Mutex` and a `Condvar`, so a futex).
//!
//! A crossbeam (or std) channel's receiver spins and then yields the CPU a
//! few times before it sleeps. An HTTP worker waits milliseconds for its
//! reply (a submit waits for its fsync), so each of those yields was a
//! wasted trip through the scheduler: in a 10k burst the 32 REST workers
//! made 95% of the process's 17,500 `sched_yield` calls.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

pub use crossbeam_channel::{RecvTimeoutError, TryRecvError};

/// A sender and a receiver for one value.
pub fn oneshot<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        slot: Mutex::new(Slot::Empty),
        filled: Condvar::new(),
    });
    (Sender(Some(shared.clone())), Receiver(shared))
}

#[derive(Debug)]
struct Shared<T> {
    slot: Mutex<Slot<T>>,
    filled: Condvar,
}

#[derive(Debug)]
enum Slot<T> {
    Empty,
    Full(T),
    /// Taken by the receiver, or the sender went without sending.
    Done,
}

impl<T> Shared<T> {
    fn slot(&self) -> MutexGuard<'_, Slot<T>> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Leaves the slot `Done`; the value if it was `Full`.
    fn take(slot: &mut Slot<T>) -> Option<T> {
        match std::mem::replace(slot, Slot::Done) {
            Slot::Full(value) => Some(value),
            _ => None,
        }
    }
}

/// Sends the one value; dropped unsent, it tells the receiver nothing comes.
#[derive(Debug)]
pub struct Sender<T>(Option<Arc<Shared<T>>>);

impl<T> Sender<T> {
    /// Hands `value` over and wakes the receiver. A receiver that is gone
    /// drops it with the slot.
    pub fn send(mut self, value: T) {
        if let Some(shared) = self.0.take() {
            *shared.slot() = Slot::Full(value);
            shared.filled.notify_one();
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if let Some(shared) = self.0.take() {
            *shared.slot() = Slot::Done;
            shared.filled.notify_one();
        }
    }
}

/// Waits for the one value.
#[derive(Debug)]
pub struct Receiver<T>(Arc<Shared<T>>);

impl<T> Receiver<T> {
    /// The value, once sent; `Timeout` after `timeout` (monotonic clock),
    /// `Disconnected` when the sender went without sending (or it was
    /// taken already).
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        let deadline = Instant::now() + timeout;
        let mut slot = self.0.slot();
        loop {
            match *slot {
                Slot::Empty => {}
                Slot::Full(_) | Slot::Done => {
                    return Shared::take(&mut slot).ok_or(RecvTimeoutError::Disconnected)
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(RecvTimeoutError::Timeout);
            }
            slot = (self.0.filled)
                .wait_timeout(slot, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// The value if it has been sent, without waiting (tests).
    #[cfg(test)]
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        let mut slot = self.0.slot();
        match *slot {
            Slot::Empty => Err(TryRecvError::Empty),
            _ => Shared::take(&mut slot).ok_or(TryRecvError::Disconnected),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(10);

    #[test]
    fn the_value_sent_is_received_once() {
        let (sender, receiver) = oneshot();
        assert_eq!(receiver.try_recv(), Err(TryRecvError::Empty));
        sender.send(7);
        assert_eq!(receiver.recv_timeout(WAIT), Ok(7));
        assert_eq!(
            receiver.recv_timeout(WAIT),
            Err(RecvTimeoutError::Disconnected)
        );
    }

    #[test]
    fn a_waiting_receiver_wakes_for_the_value_or_the_senders_end() {
        let (sender, receiver) = oneshot();
        let sending = std::thread::spawn(move || sender.send("reply"));
        assert_eq!(receiver.recv_timeout(WAIT), Ok("reply"));
        sending.join().expect("sent");
        let (sender, receiver) = oneshot::<u8>();
        let dropping = std::thread::spawn(move || drop(sender));
        assert_eq!(
            receiver.recv_timeout(WAIT),
            Err(RecvTimeoutError::Disconnected)
        );
        dropping.join().expect("dropped");
    }

    #[test]
    fn nothing_sent_in_time_is_a_timeout() {
        let (sender, receiver) = oneshot::<u8>();
        assert_eq!(
            receiver.recv_timeout(Duration::from_millis(1)),
            Err(RecvTimeoutError::Timeout)
        );
        // A value sent after the timeout is still there.
        sender.send(1);
        assert_eq!(receiver.try_recv(), Ok(1));
        let (sender, receiver) = oneshot::<u8>();
        drop(receiver);
        sender.send(2);
    }
}
