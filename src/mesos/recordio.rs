//! RecordIO framing, as Mesos uses it on the scheduler event stream:
//! `<decimal length>\n<exactly length bytes>`, with no delimiter after the data.
//!
//! Sans-IO in spirit: the reader works on any `BufRead` (the de-chunked HTTP body
//! in production, byte slices in tests) and the writer returns bytes. Every
//! length is checked against a caller-supplied maximum before anything is
//! allocated, because the length line comes from the peer. Nothing here logs.

use std::fmt;
use std::io::{self, BufRead};

/// The largest record the scheduler accepts from a master. A real master's
/// largest events are OFFERS batches; 1,000 agents' offers are about 300 KiB,
/// so 16 MiB leaves ample room while still bounding memory.
pub const MAX_RECORD: usize = 16 * 1024 * 1024;

/// The longest length line we read: 20 digits fit any u64, plus slack for
/// surrounding whitespace, which mesos-go also tolerates.
const MAX_LENGTH_LINE: usize = 32;

/// Why a RecordIO stream could not be decoded.
#[derive(Debug)]
pub enum Error {
    /// The underlying reader failed (including read timeouts).
    Io(io::Error),
    /// The length line is not a decimal number.
    BadLength { line: String },
    /// The length line exceeds `MAX_LENGTH_LINE` bytes without a newline.
    LengthLineTooLong,
    /// The announced record is larger than the allowed maximum.
    TooLarge { len: u64, max: usize },
    /// The stream ended inside a length line or inside a record.
    Truncated { expected: usize, got: usize },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(err) => write!(f, "recordio read failed: {err}"),
            Error::BadLength { line } => {
                write!(f, "recordio length line is not a number: {line:?}")
            }
            Error::LengthLineTooLong => {
                write!(
                    f,
                    "recordio length line is longer than {MAX_LENGTH_LINE} bytes"
                )
            }
            Error::TooLarge { len, max } => {
                write!(
                    f,
                    "recordio record of {len} bytes exceeds the limit of {max} bytes"
                )
            }
            Error::Truncated { expected, got } => {
                write!(f, "recordio stream ended after {got} of {expected} bytes")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(err) => Some(err),
            _ => None,
        }
    }
}

/// Reads one record. Returns `Ok(None)` on a clean end of stream (EOF exactly
/// between records). Zero-length records are returned as empty vectors; the
/// real master never sends them, but stout and mesos-go both accept them.
pub fn read_record(reader: &mut impl BufRead, max_len: usize) -> Result<Option<Vec<u8>>, Error> {
    let mut line = Vec::with_capacity(MAX_LENGTH_LINE);
    loop {
        let available = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(Error::Io(err)),
        };
        if available.is_empty() {
            if line.is_empty() {
                return Ok(None);
            }
            return Err(Error::Truncated {
                expected: line.len() + 1,
                got: line.len(),
            });
        }
        let newline = available.iter().position(|&byte| byte == b'\n');
        let take = newline.map_or(available.len(), |pos| pos + 1);
        if line.len() + take > MAX_LENGTH_LINE + 1 {
            return Err(Error::LengthLineTooLong);
        }
        line.extend_from_slice(&available[..take]);
        reader.consume(take);
        if newline.is_some() {
            break;
        }
    }
    let len = parse_length(&line[..line.len() - 1])?;
    if len > max_len as u64 {
        return Err(Error::TooLarge { len, max: max_len });
    }
    let len = len as usize;
    let mut record = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        match reader.read(&mut record[filled..]) {
            Ok(0) => {
                return Err(Error::Truncated {
                    expected: len,
                    got: filled,
                })
            }
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(Error::Io(err)),
        }
    }
    Ok(Some(record))
}

/// Frames one record: the decimal length, a newline, then the bytes.
pub fn encode_record(record: &[u8]) -> Vec<u8> {
    let mut framed = Vec::with_capacity(record.len() + 12);
    framed.extend_from_slice(record.len().to_string().as_bytes());
    framed.push(b'\n');
    framed.extend_from_slice(record);
    framed
}

fn parse_length(line: &[u8]) -> Result<u64, Error> {
    let bad = || Error::BadLength {
        line: String::from_utf8_lossy(line).into_owned(),
    };
    let text = std::str::from_utf8(line).map_err(|_| bad())?.trim();
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(bad());
    }
    text.parse::<u64>().map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufReader, Read};

    /// A reader that hands out its bytes in fixed-size pieces, to prove that
    /// records split across reads (and HTTP chunks) are reassembled.
    struct Pieces {
        bytes: Vec<u8>,
        pos: usize,
        piece: usize,
    }

    impl Read for Pieces {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.piece.min(buf.len()).min(self.bytes.len() - self.pos);
            buf[..n].copy_from_slice(&self.bytes[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    /// Decodes `input` delivered in pieces of `piece` bytes and renders the
    /// outcome as text: one line per record, then `end` or the error.
    #[track_caller]
    fn check(input: &[u8], piece: usize, max: usize, expected: &str) {
        let pieces = Pieces {
            bytes: input.to_vec(),
            pos: 0,
            piece,
        };
        let mut reader = BufReader::with_capacity(piece.max(1), pieces);
        let mut lines = Vec::new();
        loop {
            match read_record(&mut reader, max) {
                Ok(Some(record)) => {
                    lines.push(format!("record {:?}", String::from_utf8_lossy(&record)))
                }
                Ok(None) => {
                    lines.push("end".to_string());
                    break;
                }
                Err(err) => {
                    lines.push(format!("error {err}"));
                    break;
                }
            }
        }
        assert_eq!(lines.join("\n"), expected.trim());
    }

    #[test]
    fn several_records_in_one_read() {
        check(
            b"20\n{\"type\":\"HEARTBEAT\"}2\nab0\n",
            4096,
            100,
            r#"
record "{\"type\":\"HEARTBEAT\"}"
record "ab"
record ""
end"#,
        );
    }

    #[test]
    fn records_split_across_reads() {
        for piece in [1, 2, 3, 7] {
            check(
                b"5\nhello11\nhello world",
                piece,
                100,
                "record \"hello\"\nrecord \"hello world\"\nend",
            );
        }
    }

    #[test]
    fn truncated_record() {
        check(
            b"10\nhello",
            3,
            100,
            "error recordio stream ended after 5 of 10 bytes",
        );
        check(
            b"5\nhello12",
            3,
            100,
            "record \"hello\"\nerror recordio stream ended after 2 of 3 bytes",
        );
    }

    #[test]
    fn bad_length_line() {
        check(
            b"x1\nhello",
            64,
            100,
            "error recordio length line is not a number: \"x1\"",
        );
        check(
            b"-1\nhello",
            64,
            100,
            "error recordio length line is not a number: \"-1\"",
        );
        check(
            b"\nhello",
            64,
            100,
            "error recordio length line is not a number: \"\"",
        );
        check(
            b"99999999999999999999999\n",
            64,
            usize::MAX,
            "error recordio length line is not a number: \"99999999999999999999999\"",
        );
        check(
            &[b'1'; 40],
            64,
            100,
            "error recordio length line is longer than 32 bytes",
        );
    }

    #[test]
    fn whitespace_around_length_is_tolerated() {
        check(b" 2 \nok", 64, 100, "record \"ok\"\nend");
    }

    #[test]
    fn oversized_length_is_rejected_before_allocating() {
        check(
            b"101\n",
            64,
            100,
            "error recordio record of 101 bytes exceeds the limit of 100 bytes",
        );
        check(b"18446744073709551615\n", 64, MAX_RECORD, "error recordio record of 18446744073709551615 bytes exceeds the limit of 16777216 bytes");
    }

    #[test]
    fn encode_round_trips() {
        let framed: Vec<u8> = [&b"\x08\x08"[..], b"", b"{}"]
            .iter()
            .flat_map(|it| encode_record(it))
            .collect();
        assert_eq!(framed, b"2\n\x08\x080\n2\n{}");
        check(
            &framed,
            1,
            10,
            "record \"\\u{8}\\u{8}\"\nrecord \"\"\nrecord \"{}\"\nend",
        );
    }
}
