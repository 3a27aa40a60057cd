//! Streaming scans of a message's payload for the few values activity
//! depends on, without buffering the message or parsing its JSON.
//!
//! * [`FieldScan`] finds the first `"key": "value"` pair for one key and
//!   keeps the value's first bytes. In JSON every quote inside a string is
//!   escaped, so an unescaped `"msg_type"` followed by a colon is a key,
//!   never text a user typed into a cell.
//! * [`FirstString`] keeps the first string of a JSON array: the message
//!   type of a terminado (terminal) message, `["stdin", "ls\r"]`.
//!
//! Both keep a few dozen bytes of state and look at each byte once.

/// Bytes of a value kept: the longest value that matters is
/// `execute_request` (15); longer ones are simply not those.
pub const VALUE_CAPACITY: usize = 16;

/// The keys scanned for (an enum, not a slice: one byte per scan state).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    /// `"msg_type"`: a Jupyter message's type.
    MsgType,
    /// `"execution_state"`: a kernel status' state.
    ExecutionState,
}

impl Key {
    fn quoted(self) -> &'static [u8] {
        match self {
            Key::MsgType => b"\"msg_type\"",
            Key::ExecutionState => b"\"execution_state\"",
        }
    }
}

/// Where a [`FieldScan`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FieldPhase {
    /// Matching the quoted key; `matched` bytes of it so far.
    Key { matched: u8 },
    /// After the key: whitespace, then `:`.
    Colon,
    /// After the colon: whitespace, then the value's opening quote.
    Quote,
    /// Inside the value.
    Value,
    /// Found (or the key was followed by something else than a string).
    Done,
}

/// Finds the first string value of a [`Key`].
#[derive(Clone, Copy, Debug)]
pub struct FieldScan {
    key: Key,
    phase: FieldPhase,
    value: [u8; VALUE_CAPACITY],
    length: u8,
    /// The value was longer than [`VALUE_CAPACITY`].
    truncated: bool,
}

impl FieldScan {
    pub fn new(key: Key) -> Self {
        Self { key, phase: FieldPhase::Key { matched: 0 }, value: [0; VALUE_CAPACITY], length: 0, truncated: false }
    }

    /// Whether the scan has finished (found, or given up on the first match).
    pub fn done(&self) -> bool {
        self.phase == FieldPhase::Done
    }

    /// The value, once found; `None` before, or if it was not a short string.
    pub fn value(&self) -> Option<&[u8]> {
        (self.done() && !self.truncated && self.length > 0).then(|| &self.value[..usize::from(self.length)])
    }

    /// Scans `bytes`; returns how many were used (all, unless it finished).
    pub fn feed(&mut self, bytes: &[u8]) -> usize {
        let key = self.key.quoted();
        for (index, &byte) in bytes.iter().enumerate() {
            match self.phase {
                FieldPhase::Key { matched } => {
                    let matched = usize::from(matched);
                    self.phase = if byte == key[matched] {
                        if matched + 1 == key.len() {
                            FieldPhase::Colon
                        } else {
                            FieldPhase::Key { matched: (matched + 1) as u8 }
                        }
                    } else {
                        // The key's only repeated byte is its quote.
                        FieldPhase::Key { matched: u8::from(byte == b'"') }
                    };
                }
                FieldPhase::Colon => match byte {
                    b':' => self.phase = FieldPhase::Quote,
                    b' ' | b'\t' | b'\r' | b'\n' => {}
                    // A string ending in the key's text (`"the msg_type"` is
                    // not possible, but `,"msg_type"]` is): look further.
                    _ => self.phase = FieldPhase::Key { matched: u8::from(byte == b'"') },
                },
                FieldPhase::Quote => match byte {
                    b'"' => self.phase = FieldPhase::Value,
                    b' ' | b'\t' | b'\r' | b'\n' => {}
                    _ => {
                        self.truncated = true;
                        self.phase = FieldPhase::Done;
                        return index + 1;
                    }
                },
                FieldPhase::Value => {
                    if byte == b'"' {
                        self.phase = FieldPhase::Done;
                        return index + 1;
                    }
                    if usize::from(self.length) < VALUE_CAPACITY {
                        self.value[usize::from(self.length)] = byte;
                        self.length += 1;
                    } else {
                        self.truncated = true;
                    }
                }
                FieldPhase::Done => return index,
            }
        }
        bytes.len()
    }
}

/// Where a [`FirstString`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ArrayPhase {
    Bracket,
    Quote,
    Value,
    Done,
}

/// The first string of a JSON array (`["stdin", ...]` -> `stdin`).
#[derive(Clone, Copy, Debug)]
pub struct FirstString {
    phase: ArrayPhase,
    value: [u8; 16],
    length: u8,
    truncated: bool,
}

impl Default for FirstString {
    fn default() -> Self {
        Self { phase: ArrayPhase::Bracket, value: [0; 16], length: 0, truncated: false }
    }
}

impl FirstString {
    pub fn done(&self) -> bool {
        self.phase == ArrayPhase::Done
    }

    /// The string, once read; `None` if the message is not such an array.
    pub fn value(&self) -> Option<&[u8]> {
        (self.done() && !self.truncated && self.length > 0).then(|| &self.value[..usize::from(self.length)])
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            let blank = matches!(byte, b' ' | b'\t' | b'\r' | b'\n');
            match self.phase {
                ArrayPhase::Bracket if blank => {}
                ArrayPhase::Bracket if byte == b'[' => self.phase = ArrayPhase::Quote,
                ArrayPhase::Quote if blank => {}
                ArrayPhase::Quote if byte == b'"' => self.phase = ArrayPhase::Value,
                ArrayPhase::Bracket | ArrayPhase::Quote => {
                    self.truncated = true;
                    self.phase = ArrayPhase::Done;
                }
                ArrayPhase::Value if byte == b'"' => self.phase = ArrayPhase::Done,
                ArrayPhase::Value => {
                    if usize::from(self.length) < self.value.len() {
                        self.value[usize::from(self.length)] = byte;
                        self.length += 1;
                    } else {
                        self.truncated = true;
                    }
                }
                ArrayPhase::Done => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(key: Key, pieces: &[&[u8]]) -> Option<Vec<u8>> {
        let mut scan = FieldScan::new(key);
        for piece in pieces {
            scan.feed(piece);
        }
        scan.value().map(<[u8]>::to_vec)
    }

    #[test]
    fn finds_the_first_key_in_any_split() {
        let text =
            br#"{"header": {"msg_id": "1", "msg_type" : "execute_request"}, "parent_header": {"msg_type": "x"}}"#;
        for split in 0..text.len() {
            let found = field(Key::MsgType, &[&text[..split], &text[split..]]);
            assert_eq!(found.as_deref(), Some(&b"execute_request"[..]), "split at {split}");
        }
    }

    #[test]
    fn text_inside_strings_is_not_a_key() {
        // A cell whose code mentions the key: its quotes arrive escaped.
        let text =
            br#"{"content": {"code": "m[\"msg_type\"] = \"status\""}, "header": {"msg_type": "execute_request"}}"#;
        assert_eq!(field(Key::MsgType, &[text]).as_deref(), Some(&b"execute_request"[..]));
        let array = br#"["msg_type", "msg_type": "status"]"#;
        assert_eq!(field(Key::MsgType, &[array]).as_deref(), Some(&b"status"[..]));
    }

    #[test]
    fn non_string_and_long_values_are_not_values() {
        assert_eq!(field(Key::MsgType, &[br#"{"msg_type": 3}"#]), None);
        assert_eq!(field(Key::MsgType, &[br#"{"msg_type": "a_value_longer_than_kept"}"#]), None);
        assert_eq!(field(Key::MsgType, &[br#"{"other": "x"}"#]), None);
    }

    #[test]
    fn first_string_of_a_terminado_message() {
        let read = |pieces: &[&[u8]]| {
            let mut scan = FirstString::default();
            for piece in pieces {
                scan.feed(piece);
            }
            scan.value().map(<[u8]>::to_vec)
        };
        assert_eq!(read(&[b"[\"st", b"din\", \"ls\\r\"]"]).as_deref(), Some(&b"stdin"[..]));
        assert_eq!(read(&[b" [ \"set_size\", 24, 80]"]).as_deref(), Some(&b"set_size"[..]));
        assert_eq!(read(&[b"{\"stdin\": 1}"]), None);
    }
}
