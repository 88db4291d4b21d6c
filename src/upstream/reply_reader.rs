//! Reads SMTP replies (RFC 5321 4.2) from the upstream, multi-line included, with size limits.

use super::UpstreamError;
use crate::smtp::reply::{Enhanced, Reply};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Longest reply line accepted (RFC 5321 4.5.3.1.5 says 512; real MTAs exceed it a little).
const MAX_LINE: usize = 4096;
/// Most lines in one reply.
const MAX_LINES: usize = 100;

/// A buffered reader of replies.
#[derive(Debug, Default)]
pub struct ReplyReader {
    buf: Vec<u8>,
}

impl ReplyReader {
    /// Reads one complete reply.
    pub async fn read<R: AsyncRead + Unpin>(
        &mut self,
        stream: &mut R,
        stage: &'static str,
    ) -> Result<Reply, UpstreamError> {
        let mut code = None;
        let mut enhanced = None;
        let mut lines = Vec::new();
        loop {
            let line = self.line(stream, stage).await?;
            let bad = |why: &str| UpstreamError::Protocol {
                stage,
                why: format!("{why}: {:?}", String::from_utf8_lossy(&line)),
            };
            if line.len() < 3 || !line[..3].iter().all(u8::is_ascii_digit) {
                return Err(bad("no reply code"));
            }
            let this: u16 = std::str::from_utf8(&line[..3])
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad("no reply code"))?;
            if !(200..600).contains(&this) || code.is_some_and(|c| c != this) {
                return Err(bad("bad reply code"));
            }
            code = Some(this);
            let sep = line.get(3).copied().unwrap_or(b' ');
            let text = String::from_utf8_lossy(line.get(4..).unwrap_or(&[])).into_owned();
            let (e, text) = split_enhanced(&text);
            if enhanced.is_none() {
                enhanced = e;
            }
            lines.push(text.into());
            if lines.len() > MAX_LINES {
                return Err(bad("too many reply lines"));
            }
            match sep {
                b' ' => break,
                b'-' => continue,
                _ => return Err(bad("bad separator")),
            }
        }
        Ok(Reply {
            code: code.unwrap_or(451),
            enhanced,
            lines,
        })
    }

    async fn line<R: AsyncRead + Unpin>(
        &mut self,
        stream: &mut R,
        stage: &'static str,
    ) -> Result<Vec<u8>, UpstreamError> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=i).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(line);
            }
            if self.buf.len() > MAX_LINE {
                return Err(UpstreamError::Protocol {
                    stage,
                    why: "reply line too long".into(),
                });
            }
            let mut chunk = [0u8; 4096];
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|source| UpstreamError::Io { stage, source })?;
            if n == 0 {
                return Err(UpstreamError::Io {
                    stage,
                    source: std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "upstream closed the connection",
                    ),
                });
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Splits a leading enhanced status code (`2.1.0 Ok`) off a reply text line.
fn split_enhanced(text: &str) -> (Option<Enhanced>, String) {
    let (head, rest) = text.split_once(' ').unwrap_or((text, ""));
    let mut parts = head.split('.');
    let parsed = (|| {
        let class: u8 = parts.next()?.parse().ok()?;
        let subject: u16 = parts.next()?.parse().ok()?;
        let detail: u16 = parts.next()?.parse().ok()?;
        (parts.next().is_none() && matches!(class, 2 | 4 | 5))
            .then_some(Enhanced(class, subject, detail))
    })();
    match parsed {
        Some(e) => (Some(e), rest.to_string()),
        None => (None, text.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_multiline_and_enhanced() {
        let mut input: &[u8] = b"250-mx Hello\r\n250-PIPELINING\r\n250 SIZE 10\r\n250 2.1.0 Ok\r\n";
        let mut r = ReplyReader::default();
        let ehlo = r.read(&mut input, "EHLO").await.unwrap();
        assert_eq!(ehlo.lines.len(), 3);
        assert_eq!(ehlo.enhanced, None);
        let ok = r.read(&mut input, "MAIL").await.unwrap();
        assert_eq!(ok.enhanced, Some(Enhanced(2, 1, 0)));
        assert_eq!(ok.first_line(), "Ok");
        let mut bad: &[u8] = b"hello\r\n";
        assert!(ReplyReader::default().read(&mut bad, "x").await.is_err());
    }
}
