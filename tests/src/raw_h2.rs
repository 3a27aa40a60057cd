//! HTTP/2 over cleartext (h2c, prior knowledge), frame by frame.
//!
//! The HTTP/2 limit tests send what no client library sends: more streams
//! than the server allows, thousands of HEADERS + RST_STREAM pairs, a
//! header block continued forever. This helper writes raw frames and reads
//! the server's frames back. Header blocks are HPACK literals without
//! indexing or Huffman coding (always valid, never touching the dynamic
//! table), and a response's `:status` is decoded just far enough to read it.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Bound on connecting and on each write.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// RFC 9113 error codes the tests look for.
pub const CANCEL: u32 = 0x8;
pub const REFUSED_STREAM: u32 = 0x7;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// `SETTINGS_MAX_CONCURRENT_STREAMS` and `SETTINGS_MAX_HEADER_LIST_SIZE`.
pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
pub const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;

/// One frame read from the server.
#[derive(Clone, Debug)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The error code of a RST_STREAM or GOAWAY frame.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            RST_STREAM => 0,
            GOAWAY => 4,
            _ => return None,
        };
        let bytes = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    /// The `:status` of a response HEADERS frame (see [`status_of`]).
    pub fn status(&self) -> Option<u16> {
        if self.kind != HEADERS {
            return None;
        }
        status_of(headers_payload(self))
    }

    /// The value of setting `id` in a SETTINGS frame.
    pub fn setting(&self, id: u16) -> Option<u32> {
        if self.kind != SETTINGS {
            return None;
        }
        self.payload
            .chunks_exact(6)
            .find(|entry| u16::from_be_bytes([entry[0], entry[1]]) == id)
            .map(|entry| u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]))
    }
}

/// What ended a read.
#[derive(Debug)]
pub enum ReadEnd {
    /// The server closed (or reset) the connection.
    Closed,
    /// Nothing arrived in time.
    TimedOut,
}

/// A client connection after the connection preface and SETTINGS exchange.
pub struct H2Connection {
    stream: TcpStream,
    buf: Vec<u8>,
    /// The server's first SETTINGS frame.
    pub server_settings: Frame,
}

impl H2Connection {
    /// Connects, sends the preface and empty SETTINGS, and waits for the
    /// server's SETTINGS (acknowledged).
    pub fn connect(addr: SocketAddr) -> io::Result<H2Connection> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let mut connection = H2Connection {
            stream,
            buf: Vec::new(),
            server_settings: Frame { kind: SETTINGS, flags: 0, stream: 0, payload: Vec::new() },
        };
        connection.stream.write_all(PREFACE)?;
        connection.write_frame(SETTINGS, 0, 0, &[])?;
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            let frame = connection.read_frame_until(deadline).map_err(|end| {
                io::Error::new(ErrorKind::UnexpectedEof, format!("no SETTINGS from the server: {end:?}"))
            })?;
            if frame.kind == SETTINGS && frame.flags & ACK == 0 {
                connection.write_frame(SETTINGS, ACK, 0, &[])?;
                connection.server_settings = frame;
                return Ok(connection);
            }
        }
    }

    /// A second handle on the socket, for writing from another thread.
    pub fn try_clone_stream(&self) -> io::Result<TcpStream> {
        self.stream.try_clone()
    }

    /// Writes one frame.
    pub fn write_frame(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) -> io::Result<()> {
        self.stream.write_all(&frame_bytes(kind, flags, stream, payload))
    }

    /// Writes bytes as they are (many frames at once).
    pub fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// A GET of `path` on `stream` with END_STREAM.
    pub fn get(&mut self, stream: u32, path: &str) -> io::Result<()> {
        let block = header_block(&request_fields("GET", path, &[]));
        self.write_frame(HEADERS, END_HEADERS | END_STREAM, stream, &block)
    }

    /// The next frame, within `timeout`.
    pub fn read_frame(&mut self, timeout: Duration) -> Result<Frame, ReadEnd> {
        self.read_frame_until(Instant::now() + timeout)
    }

    fn read_frame_until(&mut self, deadline: Instant) -> Result<Frame, ReadEnd> {
        loop {
            if self.buf.len() >= 9 {
                let length =
                    (usize::from(self.buf[0]) << 16) | (usize::from(self.buf[1]) << 8) | usize::from(self.buf[2]);
                if self.buf.len() >= 9 + length {
                    let stream = u32::from_be_bytes([self.buf[5], self.buf[6], self.buf[7], self.buf[8]]) & 0x7fff_ffff;
                    let frame = Frame {
                        kind: self.buf[3],
                        flags: self.buf[4],
                        stream,
                        payload: self.buf[9..9 + length].to_vec(),
                    };
                    self.buf.drain(..9 + length);
                    return Ok(frame);
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ReadEnd::TimedOut);
            }
            let _ = self.stream.set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))));
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(ReadEnd::Closed),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Err(ReadEnd::Closed),
            }
        }
    }

    /// Reads frames until `accept` returns something, the connection ends,
    /// or `timeout` passes. PINGs are answered on the way.
    pub fn read_until<T>(
        &mut self,
        timeout: Duration,
        mut accept: impl FnMut(&Frame) -> Option<T>,
    ) -> Result<T, ReadEnd> {
        let deadline = Instant::now() + timeout;
        loop {
            let frame = self.read_frame_until(deadline)?;
            if frame.kind == PING && frame.flags & ACK == 0 {
                let _ = self.write_frame(PING, ACK, 0, &frame.payload);
            }
            if let Some(found) = accept(&frame) {
                return Ok(found);
            }
        }
    }
}

/// The bytes of one frame.
pub fn frame_bytes(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).unwrap_or(u32::MAX).to_be_bytes();
    let mut bytes = Vec::with_capacity(9 + payload.len());
    bytes.extend_from_slice(&length[1..]);
    bytes.push(kind);
    bytes.push(flags);
    bytes.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// The pseudo-headers of a request to `path` plus `extra` fields.
pub fn request_fields(method: &str, path: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut fields = vec![
        (":method".to_string(), method.to_string()),
        (":scheme".to_string(), "http".to_string()),
        (":authority".to_string(), "localhost".to_string()),
        (":path".to_string(), path.to_string()),
    ];
    fields.extend(extra.iter().map(|(name, value)| (name.to_string(), value.to_string())));
    fields
}

/// An HPACK block of literal fields without indexing, new names, no Huffman.
pub fn header_block(fields: &[(String, String)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in fields {
        block.push(0x00);
        encode_int(&mut block, name.len(), 7, 0x00);
        block.extend_from_slice(name.as_bytes());
        encode_int(&mut block, value.len(), 7, 0x00);
        block.extend_from_slice(value.as_bytes());
    }
    block
}

/// HPACK integer with an `prefix`-bit prefix; `first` holds the bits above it.
fn encode_int(out: &mut Vec<u8>, value: usize, prefix: u32, first: u8) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// A HEADERS payload without padding and priority fields.
fn headers_payload(frame: &Frame) -> &[u8] {
    let mut payload = frame.payload.as_slice();
    let mut pad = 0;
    if frame.flags & 0x8 != 0 {
        pad = usize::from(payload.first().copied().unwrap_or(0));
        payload = payload.get(1..).unwrap_or_default();
    }
    if frame.flags & 0x20 != 0 {
        payload = payload.get(5..).unwrap_or_default();
    }
    payload.get(..payload.len().saturating_sub(pad)).unwrap_or_default()
}

/// `:status` of a response header block, when it is the first field and
/// coded as a static-table entry or a literal with a static name (what a
/// server's first response on a connection uses).
pub fn status_of(block: &[u8]) -> Option<u16> {
    const STATIC: [(u8, u16); 7] = [(8, 200), (9, 204), (10, 206), (11, 304), (12, 400), (13, 404), (14, 500)];
    let first = *block.first()?;
    if first & 0x80 != 0 {
        let index = first & 0x7f;
        return STATIC.iter().find(|(i, _)| *i == index).map(|(_, status)| *status);
    }
    // Literal with incremental indexing (6-bit index) or without / never
    // indexed (4-bit index), name from the static table's `:status` rows.
    let index = if first & 0x40 != 0 { first & 0x3f } else { first & 0x0f };
    if !(8..=14).contains(&index) {
        return None;
    }
    let length_byte = *block.get(1)?;
    let length = usize::from(length_byte & 0x7f);
    let value = block.get(2..2 + length)?;
    let text = if length_byte & 0x80 != 0 { huffman_digits(value)? } else { String::from_utf8(value.to_vec()).ok()? };
    text.parse().ok()
}

/// Decodes a Huffman-coded string of decimal digits (RFC 7541 Appendix B:
/// `0`-`2` are 5-bit codes, `3`-`9` 6-bit codes).
fn huffman_digits(bytes: &[u8]) -> Option<String> {
    const CODES: [(u32, u32, char); 10] = [
        (0b00000, 5, '0'),
        (0b00001, 5, '1'),
        (0b00010, 5, '2'),
        (0b011001, 6, '3'),
        (0b011010, 6, '4'),
        (0b011011, 6, '5'),
        (0b011100, 6, '6'),
        (0b011101, 6, '7'),
        (0b011110, 6, '8'),
        (0b011111, 6, '9'),
    ];
    let bits: Vec<bool> = bytes.iter().flat_map(|byte| (0..8).rev().map(move |i| byte >> i & 1 == 1)).collect();
    let mut text = String::new();
    let mut at = 0;
    'next: while at < bits.len() {
        for (code, length, digit) in CODES {
            let length = length as usize;
            if at + length > bits.len() {
                continue;
            }
            let value = bits[at..at + length].iter().fold(0u32, |acc, bit| (acc << 1) | u32::from(*bit));
            if value == code {
                text.push(digit);
                at += length;
                continue 'next;
            }
        }
        // What is left must be EOS padding (all ones, under 8 bits).
        if bits.len() - at < 8 && bits[at..].iter().all(|bit| *bit) {
            break;
        }
        return None;
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_hpack_integers_as_rfc_7541_does() {
        let mut out = Vec::new();
        encode_int(&mut out, 10, 5, 0);
        assert_eq!(out, [10]);
        out.clear();
        encode_int(&mut out, 1337, 5, 0);
        assert_eq!(out, [31, 154, 10]);
    }

    #[test]
    fn reads_statuses_in_their_usual_encodings() {
        assert_eq!(status_of(&[0x88]), Some(200));
        assert_eq!(status_of(&[0x8d]), Some(404));
        assert_eq!(status_of(&[0x48, 0x03, b'4', b'3', b'1']), Some(431));
        // "431" Huffman-coded: 011010 011001 00001 + EOS padding.
        assert_eq!(status_of(&[0x48, 0x83, 0b0110_1001, 0b1001_0000, 0b1111_1111]), Some(431));
        assert_eq!(status_of(&[0x08, 0x03, b'5', b'0', b'3']), Some(503));
    }

    #[test]
    fn frames_have_a_nine_byte_header() {
        let bytes = frame_bytes(RST_STREAM, 0, 3, &CANCEL.to_be_bytes());
        assert_eq!(bytes, [0, 0, 4, 3, 0, 0, 0, 0, 3, 0, 0, 0, 8]);
    }
}
