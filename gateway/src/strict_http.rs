//! Strict HTTP/1.1 request-head checks, done on the raw bytes the client
//! sent before anything routes on them.
//!
//! Pingora's parser is lenient in places that have caused request smuggling
//! elsewhere (it drops Content-Length when Transfer-Encoding is present, and
//! accepts identical duplicate lengths). A front door must refuse framing
//! ambiguity outright: each case here is answered 400 and the connection is
//! closed, so no byte after the ambiguity is ever read as a request.

/// Why a request head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("request headers larger than the limit")]
    TooLarge,
    #[error("bare LF line ending")]
    BareLf,
    #[error("obsolete line folding")]
    ObsFold,
    #[error("invalid header name")]
    BadName,
    #[error("underscore in header name")]
    Underscore,
    #[error("control character in header value")]
    BadValue,
    #[error("more than one Content-Length")]
    DuplicateContentLength,
    #[error("Content-Length is not a plain decimal number")]
    BadContentLength,
    #[error("both Content-Length and Transfer-Encoding")]
    LengthAndChunked,
    #[error("Transfer-Encoding other than a single chunked")]
    BadTransferEncoding,
    #[error("more than one Host")]
    DuplicateHost,
    #[error("invalid request line")]
    BadRequestLine,
}

impl HeadError {
    /// The status the client gets.
    pub fn status(self) -> u16 {
        match self {
            HeadError::TooLarge => 431,
            _ => 400,
        }
    }
}

/// Checks a raw HTTP/1.x request head (request line and headers, up to and
/// including the blank line).
pub fn check_head(raw: &[u8], max_len: usize) -> Result<(), HeadError> {
    if raw.len() > max_len {
        return Err(HeadError::TooLarge);
    }
    let mut lines = split_lines(raw)?;
    let request_line = lines.next().ok_or(HeadError::BadRequestLine)?;
    if request_line.iter().any(|b| *b < 0x20 || *b == 0x7f) || request_line.split(|b| *b == b' ').count() != 3 {
        return Err(HeadError::BadRequestLine);
    }
    let mut content_lengths = 0;
    let mut transfer_encoding = false;
    let mut hosts = 0;
    for line in lines {
        if line.is_empty() {
            break;
        }
        if matches!(line[0], b' ' | b'\t') {
            return Err(HeadError::ObsFold);
        }
        let colon = line.iter().position(|b| *b == b':').ok_or(HeadError::BadName)?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() || !name.iter().all(|b| is_token(*b)) {
            return Err(HeadError::BadName);
        }
        if name.contains(&b'_') {
            return Err(HeadError::Underscore);
        }
        if value.iter().any(|b| (*b < 0x20 && *b != b'\t') || *b == 0x7f) {
            return Err(HeadError::BadValue);
        }
        let value = value.trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") {
            content_lengths += 1;
            if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
                return Err(HeadError::BadContentLength);
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if transfer_encoding || !value.eq_ignore_ascii_case(b"chunked") {
                return Err(HeadError::BadTransferEncoding);
            }
            transfer_encoding = true;
        } else if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        }
    }
    if content_lengths > 1 {
        return Err(HeadError::DuplicateContentLength);
    }
    if content_lengths == 1 && transfer_encoding {
        return Err(HeadError::LengthAndChunked);
    }
    if hosts > 1 {
        return Err(HeadError::DuplicateHost);
    }
    Ok(())
}

/// Lines ending in CRLF; a LF without CR is refused.
fn split_lines(raw: &[u8]) -> Result<impl Iterator<Item = &[u8]>, HeadError> {
    for (index, byte) in raw.iter().enumerate() {
        if *byte == b'\n' && (index == 0 || raw[index - 1] != b'\r') {
            return Err(HeadError::BareLf);
        }
    }
    Ok(raw.split(|b| *b == b'\n').map(|line| line.strip_suffix(b"\r").unwrap_or(line)))
}

/// RFC 9110 `tchar`.
fn is_token(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 64 * 1024;

    fn check(head: &str) -> Result<(), HeadError> {
        check_head(head.as_bytes(), LIMIT)
    }

    #[test]
    fn accepts_ordinary_requests() {
        assert_eq!(check("GET / HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n"), Ok(()));
        assert_eq!(check("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"), Ok(()));
        assert_eq!(check("POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"), Ok(()));
    }

    #[test]
    fn refuses_framing_ambiguity() {
        let cl_te = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(check(cl_te), Err(HeadError::LengthAndChunked));
        let te_cl = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(check(te_cl), Err(HeadError::LengthAndChunked));
        let two_cl = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(check(two_cl), Err(HeadError::DuplicateContentLength));
        let signed = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n";
        assert_eq!(check(signed), Err(HeadError::BadContentLength));
        let te_list = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n";
        assert_eq!(check(te_list), Err(HeadError::BadTransferEncoding));
    }

    #[test]
    fn refuses_malformed_lines() {
        assert_eq!(check("GET / HTTP/1.1\nHost: a\r\n\r\n"), Err(HeadError::BareLf));
        assert_eq!(check("GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n"), Err(HeadError::ObsFold));
        assert_eq!(check("GET / HTTP/1.1\r\nX_Forwarded_For: 1\r\n\r\n"), Err(HeadError::Underscore));
        assert_eq!(check("GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n"), Err(HeadError::BadValue));
        assert_eq!(check("GET / HTTP/1.1\r\nBad Name: a\r\n\r\n"), Err(HeadError::BadName));
        assert_eq!(check("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), Err(HeadError::DuplicateHost));
    }

    #[test]
    fn refuses_oversized_heads_with_431() {
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(LIMIT));
        assert_eq!(check(&big).map_err(HeadError::status), Err(431));
    }
}
