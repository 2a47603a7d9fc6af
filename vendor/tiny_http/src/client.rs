use ascii::AsciiString;

use std::io::Error as IoError;
use std::io::Result as IoResult;
use std::io::{BufReader, BufWriter, ErrorKind, Read};

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use crate::common::{HTTPVersion, Method};
use crate::request::BodyBuffer;
use crate::util::refined_tcp_stream::ReadTimeoutHandle;
use crate::util::{DrainBound, RefinedTcpStream};
use crate::util::{SequentialReader, SequentialReaderBuilder, SequentialWriterBuilder};
use crate::{Limits, Request};

/// A ClientConnection is an object that will store a socket to a client
/// and return Request objects.
pub struct ClientConnection {
    // address of the client
    remote_addr: Option<SocketAddr>,

    // sequence of Readers to the stream, so that the data is not read in
    //  the wrong order
    source: SequentialReaderBuilder<BufReader<RefinedTcpStream>>,

    // sequence of Writers to the stream, to avoid writing response #2 before
    //  response #1
    sink: SequentialWriterBuilder<BufWriter<RefinedTcpStream>>,

    // Reader to read the next header from
    next_header_source: SequentialReader<BufReader<RefinedTcpStream>>,

    // set to true if we know that the previous request is the last one
    no_more_requests: bool,

    // true if the connection goes through SSL
    secure: bool,

    // the bounds this connection is read within
    limits: Limits,

    // switches the socket between the idle and the read timeout (plain
    // connections only; a TLS one keeps the read timeout throughout)
    read_timeout: Option<ReadTimeoutHandle>,

    // gets an error if the previous request's body was left unread and could
    // not be drained: the stream is then mid-body and must not be read on
    previous_body: Option<Receiver<IoResult<()>>>,
}

/// Error that can happen when reading a request.
#[derive(Debug)]
enum ReadError {
    WrongRequestLine,
    WrongHeader(HTTPVersion),
    /// the client sent an unrecognized `Expect` header
    ExpectationFailed(HTTPVersion),
    ReadIoError(IoError),
    /// no request started within the idle timeout
    Idle,
    /// the request line alone is over the header byte limit
    UriTooLong,
    /// the headers are over the header byte or count limit
    HeaderFieldsTooLarge(HTTPVersion),
    /// the request line names an HTTP version above 1.1
    VersionNotSupported,
}

/// Error that can happen when reading one line of a request head.
enum LineError {
    Io(IoError),
    /// the line would go over the head's remaining byte budget
    TooLong,
}

impl ClientConnection {
    /// Creates a new `ClientConnection` that takes ownership of the `TcpStream`.
    ///
    /// Fails if the client's address cannot be read (it may already be gone).
    pub fn new(
        write_socket: RefinedTcpStream,
        mut read_socket: RefinedTcpStream,
        limits: Limits,
    ) -> IoResult<ClientConnection> {
        let remote_addr = read_socket.peer_addr()?;
        let secure = read_socket.secure();
        let read_timeout = read_socket.read_timeout_handle();

        let mut source = SequentialReaderBuilder::new(BufReader::with_capacity(1024, read_socket));
        let first_header = source.next().unwrap();

        Ok(ClientConnection {
            source,
            sink: SequentialWriterBuilder::new(BufWriter::with_capacity(1024, write_socket)),
            remote_addr,
            next_header_source: first_header,
            no_more_requests: false,
            secure,
            limits,
            read_timeout,
            previous_body: None,
        })
    }

    /// Reads the next line from self.next_header_source.
    ///
    /// Reads until `CRLF` is reached. The next read will start
    ///  at the first byte of the new line. `first` is a byte of the line
    ///  already read. Every byte, CRLF included, is taken from `budget`;
    ///  the line fails once past `deadline`.
    fn read_next_line(
        &mut self,
        first: Option<u8>,
        budget: &mut usize,
        deadline: Option<Instant>,
    ) -> Result<AsciiString, LineError> {
        let mut buf = Vec::new();
        let mut prev_byte_was_cr = false;
        let mut first = first;

        loop {
            let byte = match first.take() {
                Some(byte) => byte,
                None => {
                    // Only a read that may wait on the socket can be late:
                    // no clock read per byte of a head already buffered.
                    if self.next_header_source.buffered() == 0
                        && matches!(deadline, Some(deadline) if Instant::now() >= deadline)
                    {
                        let info = "request head not received in time";
                        return Err(LineError::Io(IoError::new(ErrorKind::TimedOut, info)));
                    }
                    match self.next_header_source.by_ref().bytes().next() {
                        Some(b) => b.map_err(LineError::Io)?,
                        None => {
                            let err = IoError::new(ErrorKind::ConnectionAborted, "Unexpected EOF");
                            return Err(LineError::Io(err));
                        }
                    }
                }
            };
            *budget = budget.checked_sub(1).ok_or(LineError::TooLong)?;

            if byte == b'\n' && prev_byte_was_cr {
                buf.pop(); // removing the '\r'
                return AsciiString::from_ascii(buf).map_err(|_| {
                    LineError::Io(IoError::new(
                        ErrorKind::InvalidInput,
                        "Header is not in ASCII",
                    ))
                });
            }

            prev_byte_was_cr = byte == b'\r';

            buf.push(byte);
        }
    }

    /// Sets the socket's read timeout, when it can be changed.
    fn set_read_timeout(&self, timeout: Option<Duration>) -> Result<(), ReadError> {
        match &self.read_timeout {
            Some(handle) => handle.set(timeout).map_err(ReadError::ReadIoError),
            None => Ok(()),
        }
    }

    /// Waits, at most the idle timeout, for the first byte of the next request.
    fn wait_for_request(&mut self) -> Result<u8, ReadError> {
        // The previous request's body reader uses the socket until it is
        // dropped; only then may the timeout change.
        if !self.next_header_source.wait_turn() {
            let err = IoError::new(ErrorKind::ConnectionAborted, "previous request lost");
            return Err(ReadError::ReadIoError(err));
        }
        if let Some(previous_body) = self.previous_body.take() {
            if let Ok(Err(err)) = previous_body.try_recv() {
                // left mid-body: where the next request starts is unknown
                return Err(ReadError::ReadIoError(err));
            }
        }
        self.set_read_timeout(self.limits.idle_timeout)?;
        let first = match self.next_header_source.by_ref().bytes().next() {
            Some(Ok(byte)) => byte,
            Some(Err(err)) if err.kind() == ErrorKind::TimedOut => return Err(ReadError::Idle),
            Some(Err(err)) => return Err(ReadError::ReadIoError(err)),
            None => {
                let err = IoError::new(ErrorKind::ConnectionAborted, "Unexpected EOF");
                return Err(ReadError::ReadIoError(err));
            }
        };
        self.set_read_timeout(self.limits.read_timeout)?;
        Ok(first)
    }

    /// Reads a request from the stream.
    /// Blocks until the header has been read.
    fn read(&mut self) -> Result<Request, ReadError> {
        let first = self.wait_for_request()?;
        // The whole head must arrive within the read timeout and the header
        // byte budget.
        let deadline = self
            .limits
            .read_timeout
            .map(|timeout| Instant::now() + timeout);
        let mut budget = self.limits.max_header_bytes;

        let (method, path, version, headers) = {
            // reading the request line
            let (method, path, version) = {
                let line = match self.read_next_line(Some(first), &mut budget, deadline) {
                    Ok(line) => line,
                    Err(LineError::Io(err)) => return Err(ReadError::ReadIoError(err)),
                    Err(LineError::TooLong) => return Err(ReadError::UriTooLong),
                };

                parse_request_line(
                    line.as_str().trim(), // TODO: remove this conversion
                )?
            };

            // a later major version (HTTP/2.0 is the h2 preface's) is not
            // HTTP/1 framed: refuse it before reading any further
            if version > (1, 1) {
                return Err(ReadError::VersionNotSupported);
            }

            // getting all headers
            let headers = {
                let mut headers = Vec::new();
                loop {
                    let line = match self.read_next_line(None, &mut budget, deadline) {
                        Ok(line) => line,
                        Err(LineError::Io(err)) => return Err(ReadError::ReadIoError(err)),
                        Err(LineError::TooLong) => {
                            return Err(ReadError::HeaderFieldsTooLarge(version))
                        }
                    };

                    if line.is_empty() {
                        break;
                    };
                    if headers.len() == self.limits.max_headers {
                        return Err(ReadError::HeaderFieldsTooLarge(version));
                    }
                    headers.push(match FromStr::from_str(line.as_str().trim()) {
                        // TODO: remove this conversion
                        Ok(h) => h,
                        _ => return Err(ReadError::WrongHeader(version)),
                    });
                }

                headers
            };

            (method, path, version, headers)
        };

        // building the writer for the request
        let writer = self.sink.next().unwrap();

        // follow-up for next potential request
        let mut data_source = self.source.next().unwrap();
        std::mem::swap(&mut self.next_header_source, &mut data_source);

        // building the next reader
        let (body_done, previous_body) = channel();
        self.previous_body = Some(previous_body);
        let drain = DrainBound {
            max_bytes: self.limits.max_drain_bytes,
            timeout: self.limits.read_timeout,
        };
        let request = crate::request::new_request(
            self.secure,
            method,
            path,
            version.clone(),
            headers,
            self.remote_addr,
            data_source,
            writer,
            drain,
            BodyBuffer {
                max_bytes: self.limits.max_buffered_body,
                deadline,
            },
            Some(body_done),
        )
        .map_err(|e| {
            use crate::request;
            match e {
                request::RequestCreationError::CreationIoError(e) => ReadError::ReadIoError(e),
                request::RequestCreationError::ExpectationFailed => {
                    ReadError::ExpectationFailed(version)
                }
                request::RequestCreationError::InvalidContentLength => {
                    ReadError::WrongHeader(version)
                }
            }
        })?;

        // return the request
        Ok(request)
    }
}

impl ClientConnection {
    /// Answers `status` to a request that cannot be served, before the
    /// connection closes.
    fn refuse(&mut self, status: u16, version: HTTPVersion) {
        use crate::{Header, Response, StatusCode};

        let writer = self.sink.next().unwrap();
        let response = Response::new_empty(StatusCode(status))
            .with_header(Header::from_bytes(&b"Connection"[..], &b"close"[..]).unwrap());
        response.raw_print(writer, version, &[], false, None).ok();
    }
}

impl Iterator for ClientConnection {
    type Item = Request;

    /// Blocks until the next Request is available.
    /// Returns None when no new Requests will come from the client.
    fn next(&mut self) -> Option<Request> {
        use crate::{Response, StatusCode};

        // the client sent a "connection: close" header in this previous request
        //  or is using HTTP 1.0, meaning that no new request will come
        if self.no_more_requests {
            return None;
        }

        let rq = match self.read() {
            Err(ReadError::WrongRequestLine) => {
                self.refuse(400, HTTPVersion(1, 1));
                return None; // we don't know where the next request would start,
                             // se we have to close
            }

            Err(ReadError::WrongHeader(ver)) => {
                self.refuse(400, ver);
                return None; // we don't know where the next request would start,
                             // se we have to close
            }

            Err(ReadError::ReadIoError(ref err)) if err.kind() == ErrorKind::TimedOut => {
                // request timeout
                self.refuse(408, HTTPVersion(1, 1));
                return None; // closing the connection
            }

            Err(ReadError::ExpectationFailed(ver)) => {
                let writer = self.sink.next().unwrap();
                let response = Response::new_empty(StatusCode(417));
                response.raw_print(writer, ver, &[], true, None).ok();
                return None; // TODO: should be recoverable, but needs handling in case of body
            }

            Err(ReadError::UriTooLong) => {
                self.refuse(414, HTTPVersion(1, 1));
                return None; // the rest of the head is unread
            }

            Err(ReadError::HeaderFieldsTooLarge(ver)) => {
                self.refuse(431, ver);
                return None; // the rest of the head is unread
            }

            Err(ReadError::VersionNotSupported) => {
                self.refuse(505, HTTPVersion(1, 1));
                return None; // the client does not speak HTTP/1
            }

            // an idle connection is closed without a word
            Err(ReadError::Idle) => return None,

            Err(ReadError::ReadIoError(_)) => return None,

            Ok(rq) => rq,
        };

        // updating the status of the connection
        let connection_header = rq
            .headers()
            .iter()
            .find(|h| h.field.equiv("Connection"))
            .map(|h| h.value.as_str());

        let lowercase = connection_header.map(|h| h.to_ascii_lowercase());

        match lowercase {
            Some(ref val) if val.contains("close") => self.no_more_requests = true,
            Some(ref val) if val.contains("upgrade") => self.no_more_requests = true,
            Some(ref val)
                if !val.contains("keep-alive") && *rq.http_version() == HTTPVersion(1, 0) =>
            {
                self.no_more_requests = true
            }
            None if *rq.http_version() == HTTPVersion(1, 0) => self.no_more_requests = true,
            _ => (),
        };

        // returning the request
        Some(rq)
    }
}

/// Parses a "HTTP/1.1" string.
fn parse_http_version(version: &str) -> Result<HTTPVersion, ReadError> {
    let (major, minor) = match version {
        "HTTP/0.9" => (0, 9),
        "HTTP/1.0" => (1, 0),
        "HTTP/1.1" => (1, 1),
        "HTTP/2.0" => (2, 0),
        "HTTP/3.0" => (3, 0),
        _ => return Err(ReadError::WrongRequestLine),
    };

    Ok(HTTPVersion(major, minor))
}

/// Parses the request line of the request.
/// eg. GET / HTTP/1.1
fn parse_request_line(line: &str) -> Result<(Method, String, HTTPVersion), ReadError> {
    let mut parts = line.split(' ');

    let method = parts.next().and_then(|w| w.parse().ok());
    let path = parts.next().map(ToOwned::to_owned);
    let version = parts.next().and_then(|w| parse_http_version(w).ok());

    method
        .and_then(|method| Some((method, path?, version?)))
        .ok_or(ReadError::WrongRequestLine)
}

#[cfg(test)]
mod test {
    #[test]
    fn test_parse_request_line() {
        let (method, path, ver) = super::parse_request_line("GET /hello HTTP/1.1").unwrap();

        assert!(method == crate::Method::Get);
        assert!(path == "/hello");
        assert!(ver == crate::common::HTTPVersion(1, 1));

        assert!(super::parse_request_line("GET /hello").is_err());
        assert!(super::parse_request_line("qsd qsd qsd").is_err());
    }
}
