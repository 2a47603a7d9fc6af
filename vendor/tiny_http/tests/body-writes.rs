//! P14: a large response body goes out in few large writes, not one per
//! 8 KiB (`io::copy`'s buffer), whether chunked or with a Content-Length.

use std::io::{self, Cursor, Write};
use tiny_http::{HTTPVersion, Response};

/// Keeps what it is written and where each write started.
#[derive(Default)]
struct Counting {
    starts: Vec<usize>,
    bytes: Vec<u8>,
}

impl Counting {
    /// Writes that carried body bytes (the headers go out in many small
    /// writes, which the connection's own buffer gathers).
    fn body_writes(&self) -> usize {
        let body_start = self.bytes.len() - body_of(&self.bytes).len();
        self.starts
            .iter()
            .filter(|start| **start >= body_start)
            .count()
    }
}

impl Write for Counting {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.starts.push(self.bytes.len());
        self.bytes.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

const BODY: usize = 1 << 20;

/// Prints a response of `BODY` bytes; the writes it took and the raw output.
fn print(chunked_threshold: usize) -> Counting {
    let body: Vec<u8> = (0..BODY).map(|i| (i % 251) as u8).collect();
    let response = Response::new(200.into(), Vec::new(), Cursor::new(body), Some(BODY), None)
        .with_chunked_threshold(chunked_threshold);
    let mut out = Counting::default();
    response
        .raw_print(&mut out, HTTPVersion(1, 1), &[], false, None)
        .expect("prints");
    out
}

/// The body part of `raw` (after the blank line that ends the headers).
fn body_of(raw: &[u8]) -> &[u8] {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("headers end");
    &raw[end + 4..]
}

#[test]
fn a_large_identity_body_goes_out_in_large_writes() {
    let out = print(usize::MAX);
    let head = String::from_utf8_lossy(&out.bytes[..200]).to_string();
    assert!(
        head.contains(&format!("Content-Length: {BODY}")),
        "{}",
        head
    );
    let body = body_of(&out.bytes);
    assert_eq!(body.len(), BODY);
    assert!(body.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
    // 16 writes of 64 KiB; 8 KiB writes would be 128.
    assert!(out.body_writes() <= 16, "{} writes", out.body_writes());
}

#[test]
fn a_large_chunked_body_goes_out_in_large_chunks() {
    let out = print(32768);
    let head = String::from_utf8_lossy(&out.bytes[..200]).to_string();
    assert!(head.contains("Transfer-Encoding: chunked"), "{}", head);
    // Decode the chunks and check the body survived whole.
    let mut rest = body_of(&out.bytes);
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("size line");
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap(), 16)
            .expect("hex size");
        rest = &rest[line_end + 2..];
        if size == 0 {
            break;
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
    assert_eq!(body.len(), BODY);
    assert!(body.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
    // 32 chunks of 32 KiB and the last chunk; 8 KiB chunks would be 128 writes.
    assert!(out.body_writes() <= 34, "{} writes", out.body_writes());
}
