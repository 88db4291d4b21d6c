//! Transparency for the DATA stream moat sends (RFC 5321 4.5.2).

/// RFC 5321 4.5.2: a line that starts with a dot gets one more.
pub fn dot_stuff(data: &[u8], out: &mut Vec<u8>) {
    let mut at_line_start = out.is_empty() || out.ends_with(b"\r\n");
    let mut rest = data;
    while !rest.is_empty() {
        if at_line_start && rest[0] == b'.' {
            out.push(b'.');
        }
        match rest.windows(2).position(|w| w == b"\r\n") {
            Some(i) => {
                out.extend_from_slice(&rest[..i + 2]);
                rest = &rest[i + 2..];
                at_line_start = true;
            }
            None => {
                out.extend_from_slice(rest);
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_stuffing() {
        let mut out = Vec::new();
        dot_stuff(b".a\r\nb.\r\n..c\r\n", &mut out);
        assert_eq!(out, b"..a\r\nb.\r\n...c\r\n");
        let mut out = b"X: y\r\n".to_vec();
        dot_stuff(b".", &mut out);
        assert_eq!(out, b"X: y\r\n..");
    }
}
