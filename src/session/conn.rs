//! Buffered I/O on the client connection: command lines with their framing rules, message
//! bytes for DATA and BDAT, and replies queued until the client has to wait for them.
//!
//! RFC 2920 3.1: replies to pipelined commands are flushed only when the input buffer has no
//! further complete command, so a pipelined group gets its replies in one write.

use crate::net::stream::Stream;
use crate::smtp::data::{DataReader, Feed};
use crate::smtp::reply::Reply;
use std::io;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

/// One unit of client input in command mode.
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    /// A command line, CRLF removed.
    Line(Vec<u8>),
    /// A line over the limit (the rest of it up to its LF is skipped).
    TooLong,
    /// A line with a bare CR or LF.
    BareNewline,
}

/// Why reading from the client stopped.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The client closed the connection.
    #[error("client closed the connection")]
    Closed,
    /// The client sent nothing within the timeout.
    #[error("client timeout")]
    Timeout,
    /// The client sent message data slower than `limits.min_data_rate` (slowloris).
    #[error("client sent data too slowly")]
    TooSlow,
    /// The connection failed.
    #[error("client connection error: {0}")]
    Io(#[from] io::Error),
}

/// The slowest a client may send message data: `min_rate` octets per second on average, judged
/// once `grace` has passed.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Octets per second; 0 means no minimum.
    pub min_rate: u64,
    /// How long before the average counts.
    pub grace: Duration,
}

impl Pace {
    /// True when `bytes` over `elapsed` is under the minimum rate after the grace period.
    fn too_slow(&self, bytes: u64, elapsed: Duration) -> bool {
        self.min_rate > 0
            && elapsed > self.grace
            && (bytes as f64) < self.min_rate as f64 * elapsed.as_secs_f64()
    }
}

/// The client connection with its input and output buffers.
#[derive(Debug)]
pub struct Conn {
    stream: Stream,
    input: Vec<u8>,
    /// Start of unread data in `input` (avoids shifting the buffer for every line).
    pos: usize,
    output: Vec<u8>,
    max_line: usize,
    skipping_long_line: bool,
}

impl Conn {
    /// Wraps a stream; `max_line` is the command line limit including CRLF.
    pub fn new(stream: Stream, max_line: usize) -> Self {
        Conn {
            stream,
            input: Vec::with_capacity(4096),
            pos: 0,
            output: Vec::with_capacity(1024),
            max_line,
            skipping_long_line: false,
        }
    }

    /// The underlying stream (for TLS facts).
    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    /// Queues a reply; it is sent at the next flush.
    pub fn queue(&mut self, reply: &Reply) {
        reply.write_to(&mut self.output);
    }

    /// Sends queued replies.
    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.output.is_empty() {
            self.stream.write_all(&self.output).await?;
            self.output.clear();
            self.stream.flush().await?;
        }
        Ok(())
    }

    /// True when the client sends anything, or closes, within `wait` before it was spoken to
    /// (the pre-greet test). What it sent stays buffered; nothing is flushed.
    pub async fn talks_within(&mut self, wait: Duration) -> bool {
        let mut chunk = [0u8; 1024];
        match timeout(wait, self.stream.read(&mut chunk)).await {
            Err(_) => false,
            Ok(Ok(0)) | Ok(Err(_)) => true,
            Ok(Ok(n)) => {
                self.input.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// True when buffered input holds at least the start of another command.
    pub fn has_buffered_input(&self) -> bool {
        self.pos < self.input.len()
    }

    fn buffered(&self) -> &[u8] {
        &self.input[self.pos..]
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
        if self.pos >= self.input.len() {
            self.input.clear();
            self.pos = 0;
        }
    }

    /// Reads more bytes; flushes queued replies first, since the client may be waiting for them.
    async fn fill(&mut self, limit: Duration) -> Result<usize, ConnError> {
        self.flush().await?;
        if self.pos > 0 {
            self.input.drain(..self.pos);
            self.pos = 0;
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = timeout(limit, self.stream.read(&mut chunk))
            .await
            .map_err(|_| ConnError::Timeout)??;
        if n == 0 {
            return Err(ConnError::Closed);
        }
        self.input.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads the next command line.
    ///
    /// RFC 5321 2.3.8: lines end with CRLF. A CR or LF anywhere else makes the line a
    /// `BareNewline`; the LF still ends it, so framing never depends on the bare character.
    pub async fn read_line(&mut self, limit: Duration) -> Result<Input, ConnError> {
        loop {
            let buf = &self.input[self.pos..];
            if let Some(i) = buf.iter().position(|&b| b == b'\n') {
                let line = &buf[..i];
                let result = if self.skipping_long_line {
                    None
                } else if i + 1 > self.max_line {
                    Some(Input::TooLong)
                } else if line.last() != Some(&b'\r') || line[..line.len() - 1].contains(&b'\r') {
                    Some(Input::BareNewline)
                } else {
                    Some(Input::Line(line[..line.len() - 1].to_vec()))
                };
                self.skipping_long_line = false;
                self.consume(i + 1);
                match result {
                    Some(input) => return Ok(input),
                    None => continue,
                }
            }
            if buf.len() >= self.max_line {
                let n = buf.len();
                let was_skipping = std::mem::replace(&mut self.skipping_long_line, true);
                self.consume(n);
                if !was_skipping {
                    return Ok(Input::TooLong);
                }
            }
            self.fill(limit).await?;
        }
    }

    /// Feeds message bytes to `reader` until the DATA terminator; pipelined input after it stays
    /// buffered.
    pub async fn read_data(
        &mut self,
        reader: &mut DataReader,
        limit: Duration,
        pace: Pace,
    ) -> Result<(), ConnError> {
        let (started, mut bytes) = (std::time::Instant::now(), 0u64);
        loop {
            if self.has_buffered_input() {
                match reader.feed(self.buffered()) {
                    Feed::Done { consumed } => {
                        self.consume(consumed);
                        return Ok(());
                    }
                    Feed::More => {
                        let n = self.buffered().len();
                        self.consume(n);
                    }
                }
            }
            bytes += self.fill(limit).await? as u64;
            if pace.too_slow(bytes, started.elapsed()) {
                return Err(ConnError::TooSlow);
            }
        }
    }

    /// Feeds exactly `size` bytes (one BDAT chunk) to `reader`.
    pub async fn read_chunk(
        &mut self,
        reader: &mut DataReader,
        size: usize,
        limit: Duration,
        pace: Pace,
    ) -> Result<(), ConnError> {
        let (started, mut bytes) = (std::time::Instant::now(), 0u64);
        let mut left = size;
        loop {
            let take = left.min(self.buffered().len());
            if take > 0 {
                let _ = reader.feed(&self.input[self.pos..self.pos + take]);
                self.consume(take);
                left -= take;
            }
            if left == 0 {
                return Ok(());
            }
            bytes += self.fill(limit).await? as u64;
            if pace.too_slow(bytes, started.elapsed()) {
                return Err(ConnError::TooSlow);
            }
        }
    }

    /// RFC 3207 5 / CVE-2011-0411: input the client pipelined after STARTTLS was sent in
    /// plaintext and must never be executed; it is thrown away before the handshake.
    pub fn discard_input(&mut self) -> usize {
        let n = self.buffered().len();
        self.input.clear();
        self.pos = 0;
        n
    }

    /// Replaces the stream (after a TLS handshake).
    pub fn take_stream(&mut self) -> Stream {
        std::mem::replace(&mut self.stream, Stream::Gone)
    }

    /// Installs the upgraded stream.
    pub fn set_stream(&mut self, stream: Stream) {
        self.stream = stream;
    }

    /// Flushes and closes the write side.
    pub async fn close(&mut self) {
        let _ = self.flush().await;
        let _ = self.stream.shutdown().await;
    }
}
