//! A blocking Redis connection with explicit timeouts: connect, pipeline
//! commands, read their replies. Used only by the `redis-bridge` thread.

use std::io::{BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::redis::resp::{self, Error, Reply};

/// TCP connect timeout (the original used 2 s too).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Per-read and per-write timeout: a slow Redis must not stall the bridge for long.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// One open connection.
pub struct Connection {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Connection {
    pub fn connect(addr: &str) -> Result<Connection, Error> {
        let address = addr
            .to_socket_addrs()
            .map_err(Error::Io)?
            .next()
            .ok_or_else(|| {
                Error::Io(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{addr} resolves to nothing"),
                ))
            })?;
        let stream = TcpStream::connect_timeout(&address, CONNECT_TIMEOUT).map_err(Error::Io)?;
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .map_err(Error::Io)?;
        stream
            .set_write_timeout(Some(IO_TIMEOUT))
            .map_err(Error::Io)?;
        stream.set_nodelay(true).map_err(Error::Io)?;
        let reader = BufReader::new(stream.try_clone().map_err(Error::Io)?);
        Ok(Connection {
            writer: stream,
            reader,
        })
    }

    /// Sends all commands in one write, then reads one reply per command.
    /// A server error reply is returned as `Reply::Error`, not as `Err`.
    pub fn pipeline(&mut self, commands: &[Vec<Vec<u8>>]) -> Result<Vec<Reply>, Error> {
        let mut out = Vec::new();
        for command in commands {
            let args: Vec<&[u8]> = command.iter().map(Vec::as_slice).collect();
            resp::encode_command(&mut out, &args);
        }
        self.writer.write_all(&out).map_err(Error::Io)?;
        commands
            .iter()
            .map(|_| resp::read_reply(&mut self.reader))
            .collect()
    }

    pub fn command(&mut self, args: &[&[u8]]) -> Result<Reply, Error> {
        let owned: Vec<Vec<u8>> = args.iter().map(|arg| arg.to_vec()).collect();
        let mut replies = self.pipeline(&[owned])?;
        replies
            .pop()
            .ok_or_else(|| Error::Protocol("no reply".to_string()))
    }
}
