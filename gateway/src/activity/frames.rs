//! An incremental websocket frame parser (RFC 6455, section 5) that watches
//! one direction of a spliced connection.
//!
//! It is fed the bytes exactly as the splice reads them, in any split (a
//! 14-byte header can arrive one byte per read), and never holds on to
//! them: the stream is neither copied nor delayed. What it reports is per
//! *message* (a data frame and its continuations), which is what activity
//! is about; control frames (ping, pong, close) are skipped, even when
//! they arrive between the fragments of a message.
//!
//! Payload bytes are unmasked only when the [`MessageSink`] asks for them,
//! through a small stack buffer, so a message nobody reads costs a few
//! arithmetic operations per read.

/// Longest frame header: 2 bytes, 8 of extended length, 4 of mask key.
const MAX_HEADER: usize = 14;
/// Unmasked bytes handed to the sink at once (a stack buffer).
const UNMASK_CHUNK: usize = 256;

/// The kind of a data message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataKind {
    Text,
    Binary,
}

/// Receives the messages of one direction.
pub trait MessageSink {
    /// A data message begins; `compressed` is its first frame's RSV1
    /// (permessage-deflate: the payload cannot be read).
    fn start(&mut self, kind: DataKind, compressed: bool);
    /// Whether [`MessageSink::payload`] should see the current message's bytes.
    fn wants_payload(&self) -> bool;
    /// The next unmasked bytes of the current message.
    fn payload(&mut self, bytes: &[u8]);
    /// The current message ended after `length` payload bytes.
    fn end(&mut self, length: u64);
}

/// Where the parser is within the current frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Collecting the header (`have` bytes of `header` so far).
    Header,
    /// `remaining` payload bytes of the current frame to go.
    Payload,
}

/// One direction's parser state (about 40 bytes).
#[derive(Debug)]
pub struct FrameParser {
    stage: Stage,
    header: [u8; MAX_HEADER],
    have: u8,
    remaining: u64,
    mask: [u8; 4],
    /// Offset of the next payload byte within the frame, modulo 4 (the mask's phase).
    phase: u8,
    /// The current frame is a control frame (its payload is skipped).
    control: bool,
    /// The current frame ends its message.
    fin: bool,
    /// A data message is in progress (between its first frame and its FIN).
    in_message: bool,
    /// Payload bytes of the current message so far.
    message_length: u64,
}

impl Default for FrameParser {
    fn default() -> Self {
        Self {
            stage: Stage::Header,
            header: [0; MAX_HEADER],
            have: 0,
            remaining: 0,
            mask: [0; 4],
            phase: 0,
            control: false,
            fin: false,
            in_message: false,
            message_length: 0,
        }
    }
}

impl FrameParser {
    /// Observes `data`, the next bytes of the stream.
    pub fn feed(&mut self, mut data: &[u8], sink: &mut impl MessageSink) {
        while !data.is_empty() {
            match self.stage {
                Stage::Header => {
                    let used = self.take_header(data, sink);
                    data = &data[used..];
                }
                Stage::Payload => {
                    let take = usize::try_from(self.remaining).unwrap_or(usize::MAX).min(data.len());
                    let (chunk, rest) = data.split_at(take);
                    self.payload(chunk, sink);
                    data = rest;
                    self.remaining -= take as u64;
                    if self.remaining == 0 {
                        self.frame_done(sink);
                    }
                }
            }
        }
    }

    /// Copies header bytes until the header is complete; returns how many
    /// bytes of `data` it used.
    fn take_header(&mut self, data: &[u8], sink: &mut impl MessageSink) -> usize {
        let mut used = 0;
        while used < data.len() {
            let have = usize::from(self.have);
            let need = self.header_length();
            if have >= need {
                break;
            }
            let take = (need - have).min(data.len() - used);
            self.header[have..have + take].copy_from_slice(&data[used..used + take]);
            self.have += take as u8;
            used += take;
        }
        if usize::from(self.have) >= 2 && usize::from(self.have) == self.header_length() {
            self.header_done(sink);
        }
        used
    }

    /// The header's full length, as far as known (2 until the length byte is in).
    fn header_length(&self) -> usize {
        if self.have < 2 {
            return 2;
        }
        let masked = self.header[1] & 0x80 != 0;
        let extended = match self.header[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        2 + extended + if masked { 4 } else { 0 }
    }

    fn header_done(&mut self, sink: &mut impl MessageSink) {
        let first = self.header[0];
        let (fin, compressed, opcode) = (first & 0x80 != 0, first & 0x40 != 0, first & 0x0f);
        let (length, mask_at) = match self.header[1] & 0x7f {
            126 => (u64::from(u16::from_be_bytes([self.header[2], self.header[3]])), 4),
            127 => {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(&self.header[2..10]);
                (u64::from_be_bytes(bytes), 10)
            }
            short => (u64::from(short), 2),
        };
        self.mask = if self.header[1] & 0x80 != 0 {
            [self.header[mask_at], self.header[mask_at + 1], self.header[mask_at + 2], self.header[mask_at + 3]]
        } else {
            [0; 4]
        };
        self.have = 0;
        self.phase = 0;
        self.remaining = length;
        self.fin = fin;
        self.control = opcode >= 8;
        match opcode {
            1 | 2 => {
                // A new data frame while a message is open is a protocol
                // error the endpoint will act on; here it just starts over.
                let kind = if opcode == 1 { DataKind::Text } else { DataKind::Binary };
                self.in_message = true;
                self.message_length = 0;
                sink.start(kind, compressed);
            }
            0 if self.in_message => {}
            // A stray continuation or a reserved opcode: skipped like a control frame.
            _ => self.control = true,
        }
        self.stage = Stage::Payload;
        if length == 0 {
            self.frame_done(sink);
        }
    }

    fn payload(&mut self, chunk: &[u8], sink: &mut impl MessageSink) {
        if self.control || chunk.is_empty() {
            return;
        }
        self.message_length += chunk.len() as u64;
        if !sink.wants_payload() {
            self.phase = ((usize::from(self.phase) + chunk.len()) % 4) as u8;
            return;
        }
        let mut buffer = [0u8; UNMASK_CHUNK];
        let mut offset = 0;
        while offset < chunk.len() && sink.wants_payload() {
            let piece = &chunk[offset..chunk.len().min(offset + UNMASK_CHUNK)];
            for (index, byte) in piece.iter().enumerate() {
                buffer[index] = byte ^ self.mask[(usize::from(self.phase) + index) % 4];
            }
            self.phase = ((usize::from(self.phase) + piece.len()) % 4) as u8;
            sink.payload(&buffer[..piece.len()]);
            offset += piece.len();
        }
        // Bytes the sink no longer wants only move the mask's phase on.
        self.phase = ((usize::from(self.phase) + chunk.len() - offset) % 4) as u8;
    }

    fn frame_done(&mut self, sink: &mut impl MessageSink) {
        self.stage = Stage::Header;
        if !self.control && self.fin && self.in_message {
            self.in_message = false;
            sink.end(self.message_length);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// What a sink saw: one entry per message.
    #[derive(Debug, Default, PartialEq, Eq)]
    pub struct Seen {
        pub messages: Vec<(DataKind, bool, Vec<u8>, u64)>,
        current: Option<(DataKind, bool, Vec<u8>)>,
        pub limit: Option<usize>,
    }

    impl MessageSink for Seen {
        fn start(&mut self, kind: DataKind, compressed: bool) {
            self.current = Some((kind, compressed, Vec::new()));
        }
        fn wants_payload(&self) -> bool {
            match (&self.current, self.limit) {
                (Some((_, _, bytes)), Some(limit)) => bytes.len() < limit,
                _ => true,
            }
        }
        fn payload(&mut self, bytes: &[u8]) {
            if let Some((_, _, seen)) = self.current.as_mut() {
                seen.extend_from_slice(bytes);
            }
        }
        fn end(&mut self, length: u64) {
            let (kind, compressed, bytes) = self.current.take().expect("end without start");
            self.messages.push((kind, compressed, bytes, length));
        }
    }

    /// One frame as a client (masked) or server (unmasked) sends it.
    pub fn frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
        let mask_bit = if mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => out.push(mask_bit | n as u8),
            n if n <= 0xffff => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        match mask {
            Some(key) => {
                out.extend_from_slice(&key);
                out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
            }
            None => out.extend_from_slice(payload),
        }
        out
    }

    fn parse_in(pieces: &[&[u8]]) -> Seen {
        let mut parser = FrameParser::default();
        let mut seen = Seen::default();
        for piece in pieces {
            parser.feed(piece, &mut seen);
        }
        seen
    }

    const KEY: Option<[u8; 4]> = Some([0x12, 0x34, 0x56, 0x78]);

    #[test]
    fn headers_split_at_every_byte_boundary() {
        for (length, mask) in [(5usize, None), (5, KEY), (300, KEY), (70_000, None), (70_000, KEY)] {
            let payload: Vec<u8> = (0..length).map(|i| (i % 251) as u8).collect();
            let mut stream = frame(true, 2, &payload, mask);
            stream.extend(frame(true, 1, b"next", mask));
            for split in 0..=stream.len().min(20) {
                let seen = parse_in(&[&stream[..split], &stream[split..]]);
                assert_eq!(seen.messages.len(), 2, "length {length} split at {split}");
                assert_eq!(seen.messages[0], (DataKind::Binary, false, payload.clone(), length as u64));
                assert_eq!(seen.messages[1], (DataKind::Text, false, b"next".to_vec(), 4));
            }
            // One byte per read.
            let bytes: Vec<&[u8]> = stream.chunks(1).collect();
            let seen = parse_in(&bytes);
            assert_eq!(seen.messages[0].2, payload);
        }
    }

    #[test]
    fn fragments_join_and_control_frames_between_them_are_skipped() {
        let mut stream = frame(false, 1, b"hel", KEY);
        stream.extend(frame(true, 9, b"ping", KEY));
        stream.extend(frame(false, 0, b"lo ", KEY));
        stream.extend(frame(true, 10, b"", None));
        stream.extend(frame(true, 0, b"world", KEY));
        stream.extend(frame(true, 8, &[3, 232], KEY));
        let seen = parse_in(&[&stream]);
        assert_eq!(seen.messages, vec![(DataKind::Text, false, b"hello world".to_vec(), 11)]);
    }

    #[test]
    fn empty_and_compressed_messages() {
        let mut stream = frame(true, 2, b"", None);
        let mut compressed = frame(true, 1, b"\x01\x02", KEY);
        compressed[0] |= 0x40;
        stream.extend(compressed);
        let seen = parse_in(&[&stream]);
        assert_eq!(seen.messages, vec![(DataKind::Binary, false, vec![], 0), (DataKind::Text, true, vec![1, 2], 2)]);
    }

    #[test]
    fn a_sink_that_stops_reading_keeps_the_mask_in_phase() {
        let payload: Vec<u8> = (0..1000u32).map(|i| (i % 256) as u8).collect();
        let mut stream = frame(true, 2, &payload, KEY);
        stream.extend(frame(true, 1, b"after", KEY));
        let mut parser = FrameParser::default();
        let mut seen = Seen { limit: Some(10), ..Seen::default() };
        for piece in stream.chunks(7) {
            parser.feed(piece, &mut seen);
        }
        assert_eq!(&seen.messages[0].2[..10], &payload[..10]);
        assert_eq!(seen.messages[0].3, 1000);
        assert_eq!(seen.messages[1].2, b"after");
    }

    proptest::proptest! {
        #[test]
        fn any_split_of_any_frames_parses_the_same(
            messages in proptest::collection::vec((proptest::collection::vec(proptest::num::u8::ANY, 0..400), 1usize..4, proptest::bool::ANY), 1..6),
            cuts in proptest::collection::vec(0usize..3000, 0..12),
        ) {
            let mut stream = Vec::new();
            let mut expected = Vec::new();
            for (payload, fragments, masked) in &messages {
                let mask = masked.then_some([9, 8, 7, 6]);
                let size = payload.len().div_ceil(*fragments).max(1);
                let pieces: Vec<&[u8]> = if payload.is_empty() { vec![&[][..]] } else { payload.chunks(size).collect() };
                for (index, piece) in pieces.iter().enumerate() {
                    let opcode = if index == 0 { 2 } else { 0 };
                    stream.extend(frame(index + 1 == pieces.len(), opcode, piece, mask));
                    stream.extend(frame(true, 9, b"p", mask));
                }
                expected.push((DataKind::Binary, false, payload.clone(), payload.len() as u64));
            }
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(stream.len())).collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut start = 0;
            for cut in cuts {
                pieces.push(&stream[start..cut]);
                start = cut;
            }
            pieces.push(&stream[start..]);
            proptest::prop_assert_eq!(parse_in(&pieces).messages, expected);
        }
    }
}
