//! Strict HTTP request checks, done before anything routes on a request.
//!
//! [`check_head`] reads the raw HTTP/1.x head the client sent. Pingora's
//! parser is lenient in places that have caused request smuggling elsewhere
//! (it drops Content-Length when Transfer-Encoding is present, accepts
//! identical duplicate lengths, and silently cuts a `#fragment` off the
//! target). A front door must refuse framing ambiguity outright: each case
//! here is answered 4xx and the connection is closed, so no byte after the
//! ambiguity is ever read as a request.
//!
//! [`check_request`] reads a parsed HTTP/2 request (it is forwarded as
//! HTTP/1.1, so what HTTP/1.1 forbids must be refused for it too): security
//! headers given twice, header bytes that would split an HTTP/1.1 header,
//! and encoded slashes that the gateway and the notebook would read
//! differently. For HTTP/1.x, [`check_head`] already saw every header byte
//! in its one pass over the raw head, so only [`check_target`] is left.

use pingora_http::RequestHeader;
use portico_routing::PathNormalization;

/// Why a request was refused.
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
    #[error("raw '#' in the request target")]
    Fragment,
    #[error("HTTP/1.0 request body without Content-Length")]
    LengthRequired,
    #[error("security header {0} given more than once")]
    DuplicateSecurityHeader(&'static str),
    #[error("encoded slash or backslash in the path")]
    EscapedSlash,
}

impl HeadError {
    /// The status the client gets.
    pub fn status(self) -> u16 {
        match self {
            HeadError::TooLarge => 431,
            HeadError::LengthRequired => 411,
            _ => 400,
        }
    }

    /// The body the client gets.
    pub fn body(self) -> &'static str {
        match self {
            HeadError::TooLarge => "request headers too large\n",
            HeadError::LengthRequired => "length required\n",
            _ => "bad request\n",
        }
    }
}

/// Headers that decide who the caller is: a second copy would let the
/// gateway check one while the notebook (or a policy) reads the other.
const SINGLETON_SECURITY_HEADERS: [&str; 4] =
    ["authorization", "proxy-authorization", "kubeflow-userid", "kubeflow-groups"];

/// Which singleton security header `name` is, if any.
fn singleton_index(name: &[u8]) -> Option<usize> {
    SINGLETON_SECURITY_HEADERS.iter().position(|singleton| name.eq_ignore_ascii_case(singleton.as_bytes()))
}

/// Counts singleton security headers; the second copy of one is an error.
#[derive(Default)]
struct Singletons([bool; SINGLETON_SECURITY_HEADERS.len()]);

impl Singletons {
    fn saw(&mut self, name: &[u8]) -> Result<(), HeadError> {
        let Some(index) = singleton_index(name) else { return Ok(()) };
        if std::mem::replace(&mut self.0[index], true) {
            return Err(HeadError::DuplicateSecurityHeader(SINGLETON_SECURITY_HEADERS[index]));
        }
        Ok(())
    }
}

/// Checks a parsed request (HTTP/2; HTTP/1.x in tests) before it is routed,
/// in one pass over its headers. `normalization` is the path normalization
/// in force: only `DECODE_AND_MERGE_SLASHES` gives `%2F` and `%5C` one
/// meaning.
pub fn check_request(request: &RequestHeader, normalization: PathNormalization) -> Result<(), HeadError> {
    let mut singletons = Singletons::default();
    for (name, value) in &request.headers {
        singletons.saw(name.as_str().as_bytes())?;
        // Some backends (CGI, WSGI) map `-` and `_` to the same variable:
        // `kubeflow_userid` would arrive as the identity header the gateway
        // never checked.
        if name.as_str().contains('_') {
            return Err(HeadError::Underscore);
        }
        // HTTP/2 carries these bytes fine; written into an HTTP/1.1 request
        // upstream they would end the header and start another.
        if value.as_bytes().iter().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
            return Err(HeadError::BadValue);
        }
    }
    check_target(request.raw_path(), normalization)
}

/// The request target's part of [`check_request`], for HTTP/1.x requests
/// whose headers [`check_head`] checked.
pub fn check_target(target: &[u8], normalization: PathNormalization) -> Result<(), HeadError> {
    if normalization != PathNormalization::DecodeAndMergeSlashes && has_escaped_slash(target) {
        return Err(HeadError::EscapedSlash);
    }
    Ok(())
}

/// Whether the path (not the query) holds `%2F` or `%5C`, in either case.
///
/// Routing keeps them encoded, as Envoy does by default, but many backends
/// decode them: `/app/private%2Fx` would be routed as one segment under
/// `/app/` and served as `/app/private/x`, past whatever guards
/// `/app/private/` (Envoy's `path_with_escaped_slashes_action:
/// REJECT_REQUEST`).
fn has_escaped_slash(target: &[u8]) -> bool {
    let path = target.split(|b| *b == b'?').next().unwrap_or_default();
    path.windows(3).any(|w| {
        w[0] == b'%'
            && (w[1] == b'2' && w[2].eq_ignore_ascii_case(&b'f') || w[1] == b'5' && w[2].eq_ignore_ascii_case(&b'c'))
    })
}

/// Checks a raw HTTP/1.x request head (request line and headers, up to and
/// including the blank line), security headers given twice included.
///
/// Each line is read once: a scan for control bytes (8 at a time, see
/// [`find_control`]) finds its end and whatever it must not hold, so a long
/// value (an 800-byte bearer token) costs a few instructions per 16 bytes,
/// not a dozen per byte (16k instructions for such a request before).
pub fn check_head(raw: &[u8], max_len: usize) -> Result<(), HeadError> {
    if raw.len() > max_len {
        return Err(HeadError::TooLarge);
    }
    let mut lines = Lines { rest: raw };
    let (request_line, controls) = lines.next_line()?.ok_or(HeadError::BadRequestLine)?;
    let mut parts = request_line.split(|b| *b == b' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::BadRequestLine);
    };
    if controls != Controls::None {
        return Err(HeadError::BadRequestLine);
    }
    // Pingora cuts a fragment off silently; servers disagree on whether a
    // raw `#` ends the path, and clients never send one.
    if target.contains(&b'#') {
        return Err(HeadError::Fragment);
    }
    let mut content_lengths = 0;
    let mut transfer_encoding = false;
    let mut hosts = 0;
    let mut singletons = Singletons::default();
    while let Some((line, controls)) = lines.next_line()? {
        if line.is_empty() {
            break;
        }
        if matches!(line[0], b' ' | b'\t') {
            return Err(HeadError::ObsFold);
        }
        let colon = name_end(line)?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        // A name of token bytes holds no control byte: any the line has
        // (other than a tab) is in the value.
        if controls == Controls::Other {
            return Err(HeadError::BadValue);
        }
        singletons.saw(name)?;
        if name.eq_ignore_ascii_case(b"content-length") {
            content_lengths += 1;
            let value = value.trim_ascii();
            if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
                return Err(HeadError::BadContentLength);
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if transfer_encoding || !value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
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
    // An HTTP/1.0 client sending a body without a length means it to end at
    // the close, which a request cannot do: the body would be read as the
    // next request. Refuse instead of guessing (RFC 9112 §6.3, 411).
    if version == b"HTTP/1.0"
        && content_lengths == 0
        && !transfer_encoding
        && [&b"POST"[..], b"PUT", b"PATCH"].contains(&method)
    {
        return Err(HeadError::LengthRequired);
    }
    Ok(())
}

/// The control bytes a line holds besides its CRLF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Controls {
    None,
    /// Tabs only (allowed in a header value, not in the request line).
    Tabs,
    /// Any other byte below 0x20, a CR not before a LF, or DEL.
    Other,
}

/// The head's lines, each ending in CRLF; a LF without CR is refused.
struct Lines<'a> {
    rest: &'a [u8],
}

impl<'a> Lines<'a> {
    /// The next line without its CRLF (the rest of the head when no line
    /// end is left), and what control bytes it holds.
    fn next_line(&mut self) -> Result<Option<(&'a [u8], Controls)>, HeadError> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let head = self.rest;
        let mut controls = Controls::None;
        let mut at = 0;
        while let Some(found) = find_control(&head[at..]) {
            let index = at + found;
            match head[index] {
                b'\n' => return Err(HeadError::BareLf),
                b'\r' if head.get(index + 1) == Some(&b'\n') => {
                    self.rest = &head[index + 2..];
                    return Ok(Some((&head[..index], controls)));
                }
                b'\t' if controls == Controls::None => controls = Controls::Tabs,
                b'\t' => {}
                _ => controls = Controls::Other,
            }
            at = index + 1;
        }
        self.rest = &[];
        Ok(Some((head, controls)))
    }
}

/// Index of the first byte below 0x20 or DEL, eight bytes at a time: a
/// word holds one exactly when one of two borrow tricks on it is nonzero
/// ("has a byte less than n", and "has a zero byte" after an xor with DEL;
/// both exact for presence, <https://graphics.stanford.edu/~seander/bithacks.html#HasLessInWord>).
/// Only a word that holds one is searched bytewise.
fn find_control(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let is_control = |b: &u8| *b < 0x20 || *b == 0x7f;
    let mut words = bytes.chunks_exact(8);
    let mut offset = 0;
    for word in &mut words {
        let mut array = [0; 8];
        array.copy_from_slice(word);
        let w = u64::from_le_bytes(array);
        let below_space = w.wrapping_sub(ONES * 0x20) & !w;
        let del = w ^ (ONES * 0x7f);
        let is_del = del.wrapping_sub(ONES) & !del;
        if (below_space | is_del) & HIGH != 0 {
            return word.iter().position(is_control).map(|i| offset + i);
        }
        offset += 8;
    }
    words.remainder().iter().position(is_control).map(|i| offset + i)
}

/// Where a header line's name ends (its colon), once each of its bytes is
/// known to be an RFC 9110 `tchar` other than `_` ([`HeadError::Underscore`]);
/// one table lookup per byte.
fn name_end(line: &[u8]) -> Result<usize, HeadError> {
    let mut underscore = false;
    for (at, byte) in line.iter().enumerate() {
        match NAME_BYTES[usize::from(*byte)] {
            TOKEN => {}
            UNDERSCORE => underscore = true,
            COLON if at == 0 => break,
            COLON if underscore => return Err(HeadError::Underscore),
            COLON => return Ok(at),
            _ => break,
        }
    }
    Err(HeadError::BadName)
}

/// [`name_end`]'s byte classes.
const NAME_BYTES: [u8; 256] = {
    let mut classes = [NOT_TOKEN; 256];
    let mut byte = 0;
    while byte < 256 {
        let b = byte as u8;
        if b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'`' | b'|' | b'~'
            )
        {
            classes[byte] = TOKEN;
        }
        byte += 1;
    }
    classes[b'_' as usize] = UNDERSCORE;
    classes[b':' as usize] = COLON;
    classes
};
const NOT_TOKEN: u8 = 0;
const TOKEN: u8 = 1;
const UNDERSCORE: u8 = 2;
const COLON: u8 = 3;

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 64 * 1024;

    proptest::proptest! {
        /// The table-driven name scan decides as the rules one by one do:
        /// the first colon ends the name, which must be non-empty `tchar`s,
        /// and then free of `_`.
        #[test]
        fn name_scan_agrees_with_the_rules(line in proptest::collection::vec(proptest::sample::select(&b"aZ9-_:~ \t\x80\"("[..]), 0..12)) {
            let tchar = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
            let by_rules = match line.iter().position(|b| *b == b':') {
                Some(colon) if colon > 0 && line[..colon].iter().all(tchar) => {
                    if line[..colon].contains(&b'_') { Err(HeadError::Underscore) } else { Ok(colon) }
                }
                _ => Err(HeadError::BadName),
            };
            proptest::prop_assert_eq!(name_end(&line), by_rules);
        }
    }

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
    fn control_bytes_are_found_wherever_they_are() {
        let naive = |bytes: &[u8]| bytes.iter().position(|b| *b < 0x20 || *b == 0x7f);
        for at in 0..20 {
            for byte in 0..=255u8 {
                for fill in [b'a', 0x20, 0x7e, 0x80, 0xff] {
                    let mut bytes = vec![fill; 20];
                    bytes[at] = byte;
                    assert_eq!(find_control(&bytes), naive(&bytes), "{byte:#x} at {at} in {fill:#x}");
                    bytes[19 - at / 2] = 0x7f;
                    assert_eq!(find_control(&bytes), naive(&bytes), "{byte:#x} at {at}, DEL later");
                }
            }
        }
        let long = format!("GET / HTTP/1.1\r\nAuthorization: Bearer {}\r\n\r\n", "x".repeat(800));
        assert_eq!(check(&long), Ok(()));
        assert_eq!(check(&long.replace("xxxx\r", "x\x01x\r")), Err(HeadError::BadValue));
        assert_eq!(check(&long.replace("xxxx\r", "x\rxx\r")), Err(HeadError::BadValue));
        assert_eq!(check(&long.replace("xxxx\r", "x\txx\r")), Ok(()));
        assert_eq!(check(&long.replace("xxxx\r", "xxxx")), Err(HeadError::BareLf));
        assert_eq!(check("GET /\t HTTP/1.1\r\n\r\n"), Err(HeadError::BadRequestLine));
        assert_eq!(check("GET  / HTTP/1.1\r\n\r\n"), Err(HeadError::BadRequestLine));
    }

    #[test]
    fn refuses_fragments_and_http10_bodies_without_length() {
        assert_eq!(check("GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n"), Err(HeadError::Fragment));
        assert_eq!(check("POST /a HTTP/1.0\r\nHost: a\r\n\r\n").map_err(HeadError::status), Err(411));
        assert_eq!(check("POST /a HTTP/1.0\r\nHost: a\r\nContent-Length: 0\r\n\r\n"), Ok(()));
        assert_eq!(check("GET /a HTTP/1.0\r\nHost: a\r\n\r\n"), Ok(()));
        assert_eq!(check("POST /a HTTP/1.1\r\nHost: a\r\n\r\n"), Ok(()));
    }

    fn request(path: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut request = RequestHeader::build("GET", path.as_bytes(), None).unwrap();
        for (name, value) in headers {
            request.append_header(name.to_string(), http::HeaderValue::from_bytes(value.as_bytes()).unwrap()).unwrap();
        }
        request
    }

    fn check_parsed(path: &str, headers: &[(&str, &str)]) -> Result<(), HeadError> {
        check_request(&request(path, headers), PathNormalization::MergeSlashes)
    }

    #[test]
    fn refuses_security_headers_given_twice() {
        assert_eq!(check_parsed("/", &[("authorization", "Bearer a")]), Ok(()));
        for name in SINGLETON_SECURITY_HEADERS {
            assert_eq!(check_parsed("/", &[(name, "a"), (name, "b")]), Err(HeadError::DuplicateSecurityHeader(name)));
        }
        // Cookies legitimately come as several fields over HTTP/2.
        assert_eq!(check_parsed("/", &[("cookie", "a=1"), ("cookie", "b=2")]), Ok(()));
    }

    #[test]
    fn the_raw_head_pass_refuses_security_headers_given_twice() {
        for name in SINGLETON_SECURITY_HEADERS {
            let head = format!("GET / HTTP/1.1\r\nHost: a\r\n{name}: a\r\nX: b\r\n{}: b\r\n\r\n", name.to_uppercase());
            assert_eq!(check(&head), Err(HeadError::DuplicateSecurityHeader(name)));
        }
        assert_eq!(check("GET / HTTP/1.1\r\nHost: a\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n"), Ok(()));
    }

    #[test]
    fn refuses_underscores_in_parsed_names() {
        assert_eq!(check_parsed("/", &[("kubeflow_userid", "a")]), Err(HeadError::Underscore));
        assert_eq!(check_parsed("/", &[("x-ok", "a\tb")]), Ok(()));
    }

    #[test]
    fn refuses_encoded_slashes_unless_they_are_decoded() {
        for path in ["/a%2Fb", "/a%2fb", "/a%5Cb", "/a%5cb"] {
            assert_eq!(check_parsed(path, &[]), Err(HeadError::EscapedSlash), "{path}");
            assert_eq!(
                check_request(&request(path, &[]), PathNormalization::DecodeAndMergeSlashes),
                Ok(()),
                "{path} decoded"
            );
        }
        assert_eq!(check_parsed("/a%252Fb", &[]), Ok(()));
        assert_eq!(check_parsed("/a?next=%2Fb", &[]), Ok(()));
    }

    #[test]
    fn refuses_oversized_heads_with_431() {
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(LIMIT));
        assert_eq!(check(&big).map_err(HeadError::status), Err(431));
    }
}
