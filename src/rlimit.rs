//! The process's open-file limit (`RLIMIT_NOFILE`), read and raised through
//! libc's `getrlimit`/`setrlimit`: std has no API for it, and two `extern`
//! declarations are less to audit than a crate. With `signals` and `trim`, this
//! is the crate's only `unsafe` code (`lib.rs` allows it for these three modules).
//!
//! Why raise it: every client connection costs a descriptor, and systemd
//! starts services with a soft limit of 1024 but a much higher hard limit
//! (which the unit's `LimitNOFILE=` sets). A process may raise its soft limit
//! up to the hard one on its own.

use std::io;

/// An `RLIMIT_NOFILE` pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limit {
    /// The limit in force.
    pub soft: u64,
    /// The most the soft limit may be raised to without privileges.
    pub hard: u64,
}

/// The open-file limit now.
pub(crate) fn open_files() -> io::Result<Limit> {
    sys::get()
}

/// Raises the soft open-file limit to the hard one; returns the limit before
/// and after.
pub(crate) fn raise_open_files() -> io::Result<(Limit, Limit)> {
    let before = sys::get()?;
    if before.soft >= before.hard {
        return Ok((before, before));
    }
    let raised = Limit {
        soft: before.hard,
        hard: before.hard,
    };
    sys::set(raised)?;
    Ok((before, sys::get()?))
}

/// `linux_ffi` targets (64-bit Linux, glibc and musl alike; `build.rs` lists
/// the architectures): `rlim_t` is a 64-bit unsigned integer and
/// `RLIMIT_NOFILE` is 7. Other targets get the fallback below.
#[cfg(linux_ffi)]
mod sys {
    use std::io;
    use std::os::raw::c_int;

    use super::Limit;

    const RLIMIT_NOFILE: c_int = 7;

    /// `struct rlimit`.
    #[repr(C)]
    struct RLimit {
        rlim_cur: u64,
        rlim_max: u64,
    }

    extern "C" {
        fn getrlimit(resource: c_int, rlim: *mut RLimit) -> c_int;
        fn setrlimit(resource: c_int, rlim: *const RLimit) -> c_int;
    }

    pub(super) fn get() -> io::Result<Limit> {
        let mut limit = RLimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `limit` is a valid, writable `struct rlimit` for the call.
        if unsafe { getrlimit(RLIMIT_NOFILE, &mut limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Limit {
            soft: limit.rlim_cur,
            hard: limit.rlim_max,
        })
    }

    pub(super) fn set(limit: Limit) -> io::Result<()> {
        let limit = RLimit {
            rlim_cur: limit.soft,
            rlim_max: limit.hard,
        };
        // SAFETY: `limit` is a valid `struct rlimit`, only read by the call.
        if unsafe { setrlimit(RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Elsewhere the limit is left as it is (and budgets are not fitted to it).
#[cfg(not(linux_ffi))]
mod sys {
    use std::io;

    use super::Limit;

    pub(super) fn get() -> io::Result<Limit> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }

    pub(super) fn set(_limit: Limit) -> io::Result<()> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_reaches_the_hard_limit() {
        let (before, after) = raise_open_files().expect("raises");
        assert_eq!(after.soft, before.hard);
        assert_eq!(after.hard, before.hard);
        assert_eq!(open_files().expect("reads"), after);
    }
}
