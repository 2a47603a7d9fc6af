use std::io::Result as IoResult;
use std::io::{Error as IoError, ErrorKind, Read};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

/// How much of an unread body `EqualReader` may throw away when dropped.
#[derive(Debug, Clone, Copy)]
pub struct DrainBound {
    /// Most bytes drained; with more left, nothing is read.
    pub max_bytes: usize,
    /// Longest time spent draining (`None`: no limit).
    pub timeout: Option<Duration>,
}

impl DrainBound {
    /// Drains everything, however long it takes (tiny_http 0.12.0's behaviour).
    #[allow(dead_code)]
    pub const UNBOUNDED: DrainBound = DrainBound {
        max_bytes: usize::MAX,
        timeout: None,
    };
}

/// Size of the buffer unread bytes are drained through.
const DRAIN_CHUNK: usize = 8 * 1024;

/// A `Reader` that reads exactly the number of bytes from a sub-reader.
///
/// If the limit is reached, it returns EOF. If the limit is not reached
/// when the destructor is called, the remaining bytes are read and thrown
/// away, within `drain`; when more remain than `drain` allows (or draining
/// fails), the sub-reader is left mid-body and `last_read_signal` gets an
/// error, which tells the connection to close rather than read on.
pub struct EqualReader<R>
where
    R: Read,
{
    reader: R,
    size: usize,
    drain: DrainBound,
    last_read_signal: Option<Sender<IoResult<()>>>,
    // a read of the body failed: the stream's position is not to be trusted
    failed: bool,
}

impl<R> EqualReader<R>
where
    R: Read,
{
    pub fn new(
        reader: R,
        size: usize,
        drain: DrainBound,
        last_read_signal: Option<Sender<IoResult<()>>>,
    ) -> EqualReader<R> {
        EqualReader {
            reader,
            size,
            drain,
            last_read_signal,
            failed: false,
        }
    }

    fn signal(&self, result: IoResult<()>) {
        if let Some(signal) = &self.last_read_signal {
            signal.send(result).ok();
        }
    }
}

impl<R> Read for EqualReader<R>
where
    R: Read,
{
    fn read(&mut self, buf: &mut [u8]) -> IoResult<usize> {
        if self.size == 0 {
            return Ok(0);
        }

        let buf = if buf.len() < self.size {
            buf
        } else {
            &mut buf[..self.size]
        };

        match self.reader.read(buf) {
            Ok(len) => {
                self.size -= len;
                Ok(len)
            }
            Err(err) => {
                if err.kind() != ErrorKind::Interrupted {
                    self.failed = true;
                }
                Err(err)
            }
        }
    }
}

impl<R> Drop for EqualReader<R>
where
    R: Read,
{
    fn drop(&mut self) {
        if self.size == 0 {
            return;
        }
        if self.failed {
            // a read already failed (timed out, most likely): draining would
            // wait on the same client again
            self.signal(Err(IoError::new(
                ErrorKind::InvalidData,
                "body read failed, not drained",
            )));
            return;
        }
        if self.size > self.drain.max_bytes {
            self.signal(Err(IoError::new(
                ErrorKind::InvalidData,
                "unread body too large to drain",
            )));
            return;
        }
        let deadline = self.drain.timeout.map(|timeout| Instant::now() + timeout);
        let mut buf = vec![0; self.size.min(DRAIN_CHUNK)];
        while self.size > 0 {
            if matches!(deadline, Some(deadline) if Instant::now() >= deadline) {
                self.signal(Err(IoError::new(
                    ErrorKind::TimedOut,
                    "draining the unread body took too long",
                )));
                return;
            }
            let chunk = self.size.min(buf.len());
            match self.reader.read(&mut buf[..chunk]) {
                Err(e) => {
                    self.signal(Err(e));
                    return;
                }
                Ok(0) => {
                    self.signal(Ok(()));
                    return;
                }
                Ok(other) => {
                    self.size -= other;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::EqualReader;
    use std::io::Read;

    #[test]
    fn test_limit() {
        use std::io::Cursor;

        let mut org_reader = Cursor::new("hello world".to_string().into_bytes());

        {
            let mut equal_reader =
                EqualReader::new(org_reader.by_ref(), 5, super::DrainBound::UNBOUNDED, None);

            let mut string = String::new();
            equal_reader.read_to_string(&mut string).unwrap();
            assert_eq!(string, "hello");
        }

        let mut string = String::new();
        org_reader.read_to_string(&mut string).unwrap();
        assert_eq!(string, " world");
    }

    #[test]
    fn test_not_enough() {
        use std::io::Cursor;

        let mut org_reader = Cursor::new("hello world".to_string().into_bytes());

        {
            let mut equal_reader =
                EqualReader::new(org_reader.by_ref(), 5, super::DrainBound::UNBOUNDED, None);

            let mut vec = [0];
            equal_reader.read_exact(&mut vec).unwrap();
            assert_eq!(vec[0], b'h');
        }

        let mut string = String::new();
        org_reader.read_to_string(&mut string).unwrap();
        assert_eq!(string, " world");
    }

    #[test]
    fn test_drain_bound() {
        use super::DrainBound;
        use std::io::Cursor;
        use std::sync::mpsc::channel;

        let bound = DrainBound {
            max_bytes: 4,
            timeout: None,
        };
        let mut org_reader = Cursor::new("hello world".to_string().into_bytes());
        let (tx, rx) = channel();
        {
            let mut equal_reader = EqualReader::new(org_reader.by_ref(), 6, bound, Some(tx));
            let mut vec = [0];
            equal_reader.read_exact(&mut vec).unwrap();
        }
        // 5 bytes were left, more than the bound: nothing is drained.
        assert!(rx.recv().unwrap().is_err());
        let mut string = String::new();
        org_reader.read_to_string(&mut string).unwrap();
        assert_eq!(string, "ello world");
    }
}
