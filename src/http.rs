//! The HTTP server sockets of the REST API (`api`) and of `mesos-sim`
//! (`sim`), set up in one place: every bound a client meets before a handler
//! sees its request (timeouts, head and body sizes, the connection budget)
//! is a named value here, and each server gets its own budget (nothing here
//! is process-wide).
//!
//! The hard work is in the vendored tiny_http (`vendor/tiny_http/PATCHES.md`):
//! the accept loop answers 503 past the budget without a thread; the
//! connection's own thread reads the request head and a body of up to
//! `max_buffered_body` bytes within `read_timeout`, so a handler (a worker)
//! never waits on a slow or silent client for them.

use std::io;
use std::net::TcpListener;
use std::time::Duration;

/// One server's bounds (see `tiny_http::Limits` for what each field does).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ServerLimits {
    /// A request's head, and a buffered body, must arrive within this of its
    /// first byte (408 and close otherwise); each other read waits this long.
    pub read_timeout: Duration,
    /// A connection with no request started for this long is closed.
    pub idle_timeout: Duration,
    /// A write to a client that does not read gives up after this long.
    pub write_timeout: Duration,
    /// Request line and headers, bytes (414 or 431 past it).
    pub max_header_bytes: usize,
    /// Header fields (431 past it).
    pub max_headers: usize,
    /// Bodies with a `Content-Length` up to this are read before a handler
    /// sees the request.
    pub max_buffered_body: usize,
    /// An unread body up to this is drained on drop; with more left the
    /// connection closes.
    pub max_drain_bytes: usize,
    /// Connections served at once, before `connection_budget` fits it to the
    /// process's open-file limit; past it, 503 and close.
    pub max_connections: usize,
}

/// The REST API. A short read timeout: a client that sends half a request
/// or half a body holds only its own connection, and only this long. The
/// idle timeout is longer than HTTP clients keep idle pooled connections
/// (ureq: 15 s), so a client never reuses one we are closing.
pub(crate) const REST: ServerLimits = ServerLimits {
    read_timeout: Duration::from_secs(5),
    idle_timeout: Duration::from_secs(30),
    write_timeout: Duration::from_secs(10),
    max_header_bytes: 16 * 1024,
    max_headers: 100,
    // Every body the API accepts (a longer one is answered 413 unread).
    max_buffered_body: crate::api::MAX_BODY,
    max_drain_bytes: 64 * 1024,
    max_connections: 4096,
};

/// `mesos-sim`: only our own scheduler and tests talk to it, with calls of up
/// to `sim::MAX_CALL_BODY`; bodies over `max_buffered_body` are read by its
/// workers.
pub(crate) const SIM: ServerLimits = ServerLimits {
    read_timeout: Duration::from_secs(30),
    ..REST
};

/// Descriptors kept for everything that is not a client connection (the
/// journal and snapshot files, the master and Redis sockets, the listeners,
/// logging) when `connection_budget` fits a budget to the open-file limit.
pub(crate) const FD_RESERVE: u64 = 256;

/// The smallest budget `connection_budget` fits to an open-file limit,
/// however low the limit.
pub(crate) const MIN_CONNECTIONS: usize = 16;

/// `max` connections, or fewer when the open-file limit (`open_files`, if
/// known) cannot hold them: each connection costs one descriptor, and each of
/// the (at most two) servers in the process may use half of what
/// `FD_RESERVE` leaves. Within the budget the server answers 503 instead of
/// failing `accept()` with EMFILE, and the process keeps descriptors for its
/// own files and sockets.
pub(crate) fn connection_budget(max: usize, open_files: Option<u64>) -> usize {
    let Some(open_files) = open_files else {
        return max;
    };
    let half = open_files.saturating_sub(FD_RESERVE) / 2;
    let half = usize::try_from(half).unwrap_or(usize::MAX);
    max.min(half.max(MIN_CONNECTIONS))
}

/// Binds `listen` (port 0 picks a free port) and starts a tiny_http server
/// within `limits`. `what` names the server in the log. Both servers take
/// their address from a `--listen` flag, so an error names the flag and the
/// address the way the user typed them: `--listen 0.0.0.0:7075: Address
/// already in use (os error 98)`.
pub(crate) fn serve(
    listen: &str,
    limits: &ServerLimits,
    what: &str,
) -> io::Result<tiny_http::Server> {
    let listener = listener_with_write_timeout(listen, limits.write_timeout)
        .map_err(|err| io::Error::new(err.kind(), format!("--listen {listen}: {err}")))?;
    let max_connections = connection_budget(
        limits.max_connections,
        crate::rlimit::open_files().ok().map(|limit| limit.soft),
    );
    let mut bounds = tiny_http::Limits::default();
    bounds.read_timeout = Some(limits.read_timeout);
    bounds.idle_timeout = Some(limits.idle_timeout);
    bounds.max_header_bytes = limits.max_header_bytes;
    bounds.max_headers = limits.max_headers;
    bounds.max_buffered_body = limits.max_buffered_body;
    bounds.max_drain_bytes = limits.max_drain_bytes;
    bounds.max_connections = Some(max_connections);
    let server = tiny_http::Server::from_listener_with_limits(listener, None, bounds)
        .map_err(|err| io::Error::other(format!("--listen {listen}: {what}: {err}")))?;
    log::debug!("{what} http limits={limits:?} connection_budget={max_connections}");
    Ok(server)
}

/// Binds `listen` with a send timeout that every accepted socket inherits
/// (the kernel copies SO_SNDTIMEO on accept), so a client that never reads
/// holds a worker in `respond` for at most `timeout` per write. The option is
/// set through a `TcpStream` view of the listening socket, which std allows
/// for any socket. (The read timeouts are tiny_http's, per connection.)
fn listener_with_write_timeout(listen: &str, timeout: Duration) -> io::Result<TcpListener> {
    use std::os::fd::OwnedFd;
    let listener = TcpListener::bind(listen)?;
    let socket = std::net::TcpStream::from(OwnedFd::from(listener));
    socket.set_write_timeout(Some(timeout))?;
    Ok(TcpListener::from(OwnedFd::from(socket)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(max: usize, open_files: Option<u64>, expected: usize) {
        assert_eq!(
            connection_budget(max, open_files),
            expected,
            "max={max} open_files={open_files:?}"
        );
    }

    #[test]
    fn the_budget_fits_the_open_file_limit() {
        check(4096, None, 4096);
        check(4096, Some(1_048_576), 4096);
        check(4096, Some(8448), 4096);
        check(4096, Some(8447), 4095);
        // systemd's default soft limit: two servers and the reserve fit.
        check(4096, Some(1024), 384);
        check(4096, Some(256), MIN_CONNECTIONS);
        check(4096, Some(0), MIN_CONNECTIONS);
        check(10, Some(u64::MAX), 10);
    }
}
