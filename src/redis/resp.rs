//! RESP (the Redis serialization protocol, version 2): commands out, replies
//! in. Sans-IO like `recordio`: it reads from any `BufRead` and returns
//! values. Every length from the server is checked against a named bound
//! before anything is allocated, and a `$-1` (nil) reply is a value, not a
//! hang (the original client blocked forever on it).

use std::fmt;
use std::io::{self, BufRead, Read};

/// The largest bulk string we accept (task JSON and intelligence values are small).
pub const MAX_BULK: usize = 1024 * 1024;

/// The most elements one array reply may have (a SCAN page is COUNT-sized).
pub const MAX_ARRAY: usize = 100_000;

/// The longest line of a simple string, error or length.
const MAX_LINE: usize = 64 * 1024;

/// Arrays inside arrays: SCAN needs two levels.
const MAX_DEPTH: usize = 4;

/// One reply from the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<Reply>),
}

/// Why a reply could not be read.
#[derive(Debug)]
pub enum Error {
    Io(io::Error),
    /// The bytes are not RESP, or exceed a bound.
    Protocol(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(err) => write!(f, "redis connection failed: {err}"),
            Error::Protocol(what) => write!(f, "redis sent garbage: {what}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(err) => Some(err),
            Error::Protocol(_) => None,
        }
    }
}

/// Encodes one command as a RESP array of bulk strings.
pub fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Reads one complete reply.
pub fn read_reply(reader: &mut impl BufRead) -> Result<Reply, Error> {
    read_at_depth(reader, 0)
}

fn read_at_depth(reader: &mut impl BufRead, depth: usize) -> Result<Reply, Error> {
    let line = read_line(reader)?;
    let (kind, rest) = line.split_at(1.min(line.len()));
    match kind {
        "+" => Ok(Reply::Simple(rest.to_string())),
        "-" => Ok(Reply::Error(rest.to_string())),
        ":" => rest
            .parse()
            .map(Reply::Integer)
            .map_err(|_| protocol(format!("bad integer {rest:?}"))),
        "$" => {
            let len = parse_length(rest, MAX_BULK)?;
            let Some(len) = len else {
                return Ok(Reply::Nil);
            };
            let mut bulk = vec![0u8; len + 2];
            reader.read_exact(&mut bulk).map_err(Error::Io)?;
            if !bulk.ends_with(b"\r\n") {
                return Err(protocol("bulk string not followed by CRLF".to_string()));
            }
            bulk.truncate(len);
            Ok(Reply::Bulk(bulk))
        }
        "*" => {
            if depth >= MAX_DEPTH {
                return Err(protocol(format!("arrays nested deeper than {MAX_DEPTH}")));
            }
            let Some(len) = parse_length(rest, MAX_ARRAY)? else {
                return Ok(Reply::Nil);
            };
            let mut items = Vec::with_capacity(len.min(1024));
            for _ in 0..len {
                items.push(read_at_depth(reader, depth + 1)?);
            }
            Ok(Reply::Array(items))
        }
        _ => Err(protocol(format!("unknown reply type in {line:?}"))),
    }
}

/// `-1` is nil (`None`); anything else must be 0..=max.
fn parse_length(text: &str, max: usize) -> Result<Option<usize>, Error> {
    if text == "-1" {
        return Ok(None);
    }
    match text.parse::<usize>() {
        Ok(len) if len <= max => Ok(Some(len)),
        Ok(len) => Err(protocol(format!("length {len} exceeds the limit of {max}"))),
        Err(_) => Err(protocol(format!("bad length {text:?}"))),
    }
}

fn read_line(reader: &mut impl BufRead) -> Result<String, Error> {
    let mut line = Vec::new();
    let n = reader
        .take(MAX_LINE as u64 + 2)
        .read_until(b'\n', &mut line)
        .map_err(Error::Io)?;
    if n == 0 {
        return Err(Error::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "redis closed the connection",
        )));
    }
    if !line.ends_with(b"\r\n") {
        return Err(protocol(format!(
            "line longer than {MAX_LINE} bytes or not CRLF-terminated"
        )));
    }
    line.truncate(line.len() - 2);
    String::from_utf8(line).map_err(|_| protocol("line is not UTF-8".to_string()))
}

fn protocol(what: String) -> Error {
    Error::Protocol(what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(input: &[u8], expected: &str) {
        let mut reader = input;
        let actual = match read_reply(&mut reader) {
            Ok(reply) => format!("{reply:?}"),
            Err(err) => format!("error: {err}"),
        };
        assert_eq!(actual, expected);
    }

    #[test]
    fn replies() {
        check(b"+OK\r\n", "Simple(\"OK\")");
        check(b"-ERR wrong\r\n", "Error(\"ERR wrong\")");
        check(b":30\r\n", "Integer(30)");
        check(b"$5\r\nhello\r\n", "Bulk([104, 101, 108, 108, 111])");
        check(b"$-1\r\n", "Nil");
        check(b"$0\r\n\r\n", "Bulk([])");
        check(
            b"*2\r\n$1\r\n0\r\n*1\r\n$1\r\nk\r\n",
            "Array([Bulk([48]), Array([Bulk([107])])])",
        );
        check(b"$4\r\na\r\nb\r\n", "Bulk([97, 13, 10, 98])");
    }

    #[test]
    fn garbage_is_an_error_not_a_hang_or_a_panic() {
        check(
            b"",
            "error: redis connection failed: redis closed the connection",
        );
        check(
            b"hello\r\n",
            "error: redis sent garbage: unknown reply type in \"hello\"",
        );
        check(
            b"\r\n",
            "error: redis sent garbage: unknown reply type in \"\"",
        );
        check(b":x\r\n", "error: redis sent garbage: bad integer \"x\"");
        check(
            b"$99999999999\r\n",
            "error: redis sent garbage: length 99999999999 exceeds the limit of 1048576",
        );
        check(b"$-2\r\n", "error: redis sent garbage: bad length \"-2\"");
        check(
            b"$5\r\nhi\r\n",
            "error: redis connection failed: failed to fill whole buffer",
        );
        check(
            b"$2\r\nhiXX",
            "error: redis sent garbage: bulk string not followed by CRLF",
        );
        check(
            b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",
            "error: redis sent garbage: arrays nested deeper than 4",
        );
        check(
            b"+OK\n",
            "error: redis sent garbage: line longer than 65536 bytes or not CRLF-terminated",
        );
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        encode_command(&mut out, &[b"SET", b"k", b"v\r\n"]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv\r\n\r\n");
    }
}
