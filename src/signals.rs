//! SIGTERM and SIGINT as a graceful stop request, through libc's
//! `pthread_sigmask` and `sigwait`: std has no signal API, and four `extern`
//! declarations are less to audit than a crate. With `rlimit` and `trim`, this
//! is the crate's only `unsafe` code (`lib.rs` allows it for these three modules).
//!
//! How: `main` blocks both signals before any thread starts, so every thread
//! inherits the mask and the kernel never runs a handler (no async-signal
//! safety to get right). A dedicated `signals` thread takes them with
//! `sigwait` and turns the first into a message on a channel that
//! `Running::wait_or_stop` selects on. A second signal while stopping ends
//! the process at once (the journal is write-ahead, so that is a crash the
//! state survives), for a stop that hangs.
//!
//! The mask is inherited by child processes across `exec`; the scheduler
//! starts none.

use std::fmt;
use std::io;

use crossbeam_channel::{bounded, Receiver};

/// A stop signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// `kill`, systemd's stop.
    Term,
    /// Ctrl-C.
    Int,
}

impl Signal {
    /// The exit code of a second signal that ends a hanging stop: 128 + the
    /// signal number, as a shell reports a process killed by it.
    pub fn forced_exit_code(self) -> i32 {
        128 + self.number()
    }

    fn number(self) -> i32 {
        match self {
            Signal::Int => 2,
            Signal::Term => 15,
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Signal::Term => "SIGTERM",
            Signal::Int => "SIGINT",
        })
    }
}

/// Blocks SIGTERM and SIGINT in the calling thread (and every thread it
/// starts later) and starts the `signals` thread, which sends the first one
/// on the returned channel. Call it from `main` before any other thread
/// exists: a thread started earlier keeps the default action, and a signal
/// the kernel delivers to it ends the process at once.
pub(crate) fn stop_requests() -> io::Result<Receiver<Signal>> {
    let set = sys::block()?;
    // One slot: only the first signal is a request; later ones force an exit.
    let (tx, rx) = bounded(1);
    std::thread::Builder::new()
        .name("signals".to_string())
        .spawn(move || {
            let mut stopping = false;
            loop {
                let signal = match sys::wait(&set) {
                    Ok(signal) => signal,
                    Err(err) => {
                        log::error!("waiting for signals failed, they are ignored: {err}");
                        return;
                    }
                };
                if stopping {
                    log::warn!("{signal} while stopping: exiting now");
                    std::process::exit(signal.forced_exit_code());
                }
                stopping = true;
                // The one info line comes when the stop is done (`Running`).
                log::debug!("{signal}: stopping");
                // Nobody waits any more (the process is ending on its own).
                if tx.send(signal).is_err() {
                    return;
                }
            }
        })?;
    Ok(rx)
}

/// `linux_ffi` targets (64-bit Linux, glibc and musl alike; `build.rs` lists
/// the architectures): `sigset_t` is 128 bytes (glibc's 1024-bit
/// `__sigset_t`, musl's `unsigned long[128/sizeof(long)]`); we only reserve
/// that much, aligned for `unsigned long`, and let `sigemptyset` and
/// `sigaddset` lay out the bits. `SIG_BLOCK` is 0, SIGINT 2 and SIGTERM 15.
/// Other targets get the fallback below.
#[cfg(linux_ffi)]
mod sys {
    use std::io;
    use std::os::raw::c_int;

    use super::Signal;

    const SIG_BLOCK: c_int = 0;
    const SIGINT: c_int = 2;
    const SIGTERM: c_int = 15;

    /// Storage for a `sigset_t` (128 bytes, 8-aligned).
    #[repr(C, align(8))]
    pub(super) struct SigSet([u8; 128]);

    extern "C" {
        fn sigemptyset(set: *mut SigSet) -> c_int;
        fn sigaddset(set: *mut SigSet, signum: c_int) -> c_int;
        fn pthread_sigmask(how: c_int, set: *const SigSet, old: *mut SigSet) -> c_int;
        fn sigwait(set: *const SigSet, sig: *mut c_int) -> c_int;
    }

    /// Blocks SIGINT and SIGTERM in this thread; returns the set for `wait`.
    pub(super) fn block() -> io::Result<SigSet> {
        let mut set = SigSet([0; 128]);
        // SAFETY: `set` is writable storage at least as large and aligned as
        // a `sigset_t`; these functions write only inside it.
        unsafe {
            if sigemptyset(&mut set) != 0
                || sigaddset(&mut set, SIGINT) != 0
                || sigaddset(&mut set, SIGTERM) != 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        // SAFETY: `set` is an initialised `sigset_t`, only read; `old` may be null.
        let error = unsafe { pthread_sigmask(SIG_BLOCK, &set, std::ptr::null_mut()) };
        if error != 0 {
            return Err(io::Error::from_raw_os_error(error));
        }
        Ok(set)
    }

    /// Waits for one of the signals in `set` (blocked by `block`).
    pub(super) fn wait(set: &SigSet) -> io::Result<Signal> {
        loop {
            let mut signal: c_int = 0;
            // SAFETY: `set` is an initialised `sigset_t`, only read; `signal`
            // is a writable int.
            let error = unsafe { sigwait(set, &mut signal) };
            if error != 0 {
                return Err(io::Error::from_raw_os_error(error));
            }
            match signal {
                SIGINT => return Ok(Signal::Int),
                SIGTERM => return Ok(Signal::Term),
                // Not in the set: sigwait does not return it; wait again.
                _ => continue,
            }
        }
    }
}

/// Elsewhere signals keep their default action (the process ends at once).
#[cfg(not(linux_ffi))]
mod sys {
    use std::io;

    use super::Signal;

    pub(super) struct SigSet;

    pub(super) fn block() -> io::Result<SigSet> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }

    pub(super) fn wait(_set: &SigSet) -> io::Result<Signal> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
}
