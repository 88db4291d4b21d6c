//! The message reader for DATA and BDAT: terminator, dot-unstuffing, bare CR/LF, line and size
//! limits. No I/O: the session feeds it bytes in whatever chunks the socket delivers.
//!
//! RFC 5321 4.1.1.4: DATA ends only at CRLF "." CRLF. A bare LF or bare CR anywhere in the
//! message is a fault (the SMTP smuggling class: an MTA behind us that accepts `\n.\n` would see
//! two messages where we saw one), and crucially a bare LF never starts a new line here, so
//! `\n.\r\n` can never end the message. RFC 5321 4.5.2: a leading dot is removed. BDAT chunks
//! (RFC 3030) are binary-framed: no dot processing, but the same line rules apply because moat
//! does not offer BINARYMIME.
//!
//! smtp-proto's `DataReceiver` mishandles an empty body, a dot-stuffed first line and the CRLF
//! before the final dot; this reader has tests for all three.

/// Why a message is refused once it has been read to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataFault {
    /// More octets than the size limit.
    TooBig,
    /// A bare CR or LF.
    BareNewline,
    /// A text line over the line limit.
    LineTooLong,
}

/// Limits that apply while reading a message.
#[derive(Debug, Clone, Copy)]
pub struct DataLimits {
    /// Maximum message size in octets (after dot-unstuffing).
    pub max_size: usize,
    /// Maximum text line length in octets, without the CRLF (RFC 5321 4.5.3.1.6: 998).
    pub max_line: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    LineStart,
    DotAtStart,
    DotCr,
    InLine,
    Cr,
}

/// What feeding bytes gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// All input consumed; the message goes on.
    More,
    /// The DATA terminator was seen after `consumed` input bytes; the rest is the next command.
    Done {
        /// Input bytes that belonged to the message, terminator included.
        consumed: usize,
    },
}

/// Incremental reader of one message.
#[derive(Debug)]
pub struct DataReader {
    dot_mode: bool,
    limits: DataLimits,
    state: State,
    body: Vec<u8>,
    size: usize,
    line_len: usize,
    fault: Option<DataFault>,
}

impl DataReader {
    /// A reader for DATA: dot-stuffed and terminated by CRLF.CRLF.
    pub fn dot(limits: DataLimits) -> Self {
        Self::new(limits, true)
    }

    /// A reader for BDAT: binary-framed chunks, no dot processing.
    pub fn chunked(limits: DataLimits) -> Self {
        Self::new(limits, false)
    }

    fn new(limits: DataLimits, dot_mode: bool) -> Self {
        DataReader {
            dot_mode,
            limits,
            state: State::LineStart,
            body: Vec::new(),
            size: 0,
            line_len: 0,
            fault: None,
        }
    }

    /// Octets of message content seen so far (also counted after a fault).
    pub fn size(&self) -> usize {
        self.size
    }

    /// The first fault seen, if any.
    pub fn fault(&self) -> Option<DataFault> {
        self.fault
    }

    fn set_fault(&mut self, fault: DataFault) {
        if self.fault.is_none() {
            self.fault = Some(fault);
            // Nothing of a faulty message is ever forwarded, so stop holding it.
            self.body = Vec::new();
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.size += bytes.len();
        if self.size > self.limits.max_size {
            self.set_fault(DataFault::TooBig);
        }
        if self.fault.is_none() {
            self.body.extend_from_slice(bytes);
        }
    }

    fn content(&mut self, bytes: &[u8]) {
        self.line_len += bytes.len();
        if self.line_len > self.limits.max_line {
            self.set_fault(DataFault::LineTooLong);
        }
        self.push(bytes);
    }

    /// Feeds the next bytes from the client.
    pub fn feed(&mut self, input: &[u8]) -> Feed {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::InLine => {
                    // Fast path: copy up to the next CR or LF in one go.
                    let rest = &input[i..];
                    let n = rest
                        .iter()
                        .position(|&b| b == b'\r' || b == b'\n')
                        .unwrap_or(rest.len());
                    if n > 0 {
                        self.content(&rest[..n]);
                        i += n;
                        continue;
                    }
                    if rest[0] == b'\r' {
                        self.state = State::Cr;
                    } else {
                        // A bare LF does not end the line: `\n.\r\n` must never terminate.
                        self.set_fault(DataFault::BareNewline);
                        self.push(b"\n");
                    }
                    i += 1;
                }
                State::LineStart => {
                    let b = input[i];
                    if b == b'.' && self.dot_mode {
                        self.state = State::DotAtStart;
                        i += 1;
                    } else {
                        self.state = State::InLine;
                    }
                }
                State::DotAtStart => {
                    if input[i] == b'\r' {
                        self.state = State::DotCr;
                        i += 1;
                    } else {
                        // RFC 5321 4.5.2: drop the stuffed dot, keep the rest of the line.
                        self.state = State::InLine;
                    }
                }
                State::DotCr => {
                    if input[i] == b'\n' {
                        return Feed::Done { consumed: i + 1 };
                    }
                    // ".\r" then something else: the dot was stuffing, the CR is bare.
                    self.set_fault(DataFault::BareNewline);
                    self.content(b"\r");
                    self.state = State::InLine;
                }
                State::Cr => {
                    if input[i] == b'\n' {
                        self.push(b"\r\n");
                        self.line_len = 0;
                        self.state = State::LineStart;
                        i += 1;
                    } else {
                        self.set_fault(DataFault::BareNewline);
                        self.content(b"\r");
                        self.state = State::InLine;
                    }
                }
            }
        }
        Feed::More
    }

    /// Ends the message: its body, or the fault that refuses it.
    ///
    /// For BDAT a trailing CR is a bare CR; a last line without CRLF gets one, since the body
    /// travels upstream inside DATA, which needs complete lines.
    pub fn finish(mut self) -> Result<Vec<u8>, DataFault> {
        if self.state == State::Cr {
            self.set_fault(DataFault::BareNewline);
        }
        if let Some(fault) = self.fault {
            return Err(fault);
        }
        if self.state == State::InLine && !self.body.is_empty() {
            self.body.extend_from_slice(b"\r\n");
        }
        Ok(self.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: DataLimits = DataLimits {
        max_size: 1 << 20,
        max_line: 998,
    };

    /// Feeds `input` in every split into two pieces and checks all splits agree.
    fn read_dot(input: &[u8]) -> (Result<Vec<u8>, DataFault>, usize) {
        let mut results = Vec::new();
        for split in 0..=input.len() {
            let mut r = DataReader::dot(LIMITS);
            let mut consumed = None;
            if let Feed::Done { consumed: c } = r.feed(&input[..split]) {
                consumed = Some(c);
            } else if let Feed::Done { consumed: c } = r.feed(&input[split..]) {
                consumed = Some(split + c);
            }
            let consumed = consumed.expect("terminator not found");
            results.push((r.finish(), consumed));
        }
        for w in results.windows(2) {
            assert_eq!(w[0], w[1]);
        }
        results.remove(0)
    }

    #[test]
    fn empty_body() {
        assert_eq!(read_dot(b".\r\nQUIT\r\n"), (Ok(vec![]), 3));
    }

    #[test]
    fn dot_stuffed_first_line_and_final_crlf() {
        let (body, n) = read_dot(b"..hidden\r\nline\r\n.\r\n");
        assert_eq!(body.unwrap(), b".hidden\r\nline\r\n");
        assert_eq!(n, 19);
    }

    #[test]
    fn dot_inside_line_is_kept() {
        assert_eq!(read_dot(b"a.b\r\n.x\r\n.\r\n").0.unwrap(), b"a.b\r\nx\r\n");
    }

    #[test]
    fn bare_lf_never_terminates() {
        let input = b"a\n.\r\nMAIL FROM:<x@y>\r\n.\r\n";
        let (body, n) = read_dot(input);
        assert_eq!(body, Err(DataFault::BareNewline));
        assert_eq!(n, input.len());
    }

    #[test]
    fn bare_cr_never_terminates() {
        let input = b"a\r.\r\nb\r\n.\r\n";
        let (body, n) = read_dot(input);
        assert_eq!(body, Err(DataFault::BareNewline));
        assert_eq!(n, input.len());
        let input = b"a\r\n.\r.\r\n.\r\n";
        assert_eq!(read_dot(input), (Err(DataFault::BareNewline), input.len()));
    }

    #[test]
    fn line_limit_is_998_octets_without_crlf() {
        let mut ok = vec![b'x'; 998];
        ok.extend_from_slice(b"\r\n.\r\n");
        assert!(read_dot(&ok).0.is_ok());
        let mut stuffed = vec![b'.'; 999];
        stuffed.extend_from_slice(b"\r\n.\r\n");
        assert_eq!(read_dot(&stuffed).0.unwrap().len(), 1000);
        let mut long = vec![b'x'; 999];
        long.extend_from_slice(b"\r\n.\r\n");
        assert_eq!(read_dot(&long).0, Err(DataFault::LineTooLong));
    }

    #[test]
    fn size_limit_reads_to_the_end() {
        let mut r = DataReader::dot(DataLimits {
            max_size: 4,
            max_line: 998,
        });
        assert_eq!(r.feed(b"12345\r\n"), Feed::More);
        assert_eq!(r.feed(b".\r\n"), Feed::Done { consumed: 3 });
        assert_eq!(r.finish(), Err(DataFault::TooBig));
    }

    #[test]
    fn chunked_has_no_dot_processing() {
        let mut r = DataReader::chunked(LIMITS);
        assert_eq!(r.feed(b"..a\r\n.\r"), Feed::More);
        assert_eq!(r.feed(b"\nb"), Feed::More);
        assert_eq!(r.finish().unwrap(), b"..a\r\n.\r\nb\r\n");
        let mut r = DataReader::chunked(LIMITS);
        r.feed(b"a\nb\r\n");
        assert_eq!(r.finish(), Err(DataFault::BareNewline));
        let mut r = DataReader::chunked(LIMITS);
        r.feed(b"a\r");
        assert_eq!(r.finish(), Err(DataFault::BareNewline));
    }
}
