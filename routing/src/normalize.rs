//! Istio's request path normalization, as an ingress gateway applies it.
//!
//! Istio's `meshConfig.pathNormalization.normalization` selects how Envoy
//! rewrites the request path before anything else looks at it (Envoy's
//! `normalize_path`, `merge_slashes` and `path_with_escaped_slashes_action`):
//!
//! * [`PathNormalization::None`]: the path is used exactly as received.
//! * [`PathNormalization::Base`]: RFC 3986 §6 normalization. Percent-escapes
//!   of unreserved characters are decoded once, the hex digits of the escapes
//!   that remain are uppercased, and `.`/`..` segments are removed
//!   (RFC 3986 §5.2.4). Encoded slashes (`%2F`) and backslashes (`%5C`) stay
//!   encoded, so they never separate segments.
//! * [`PathNormalization::MergeSlashes`]: `Base`, then runs of `/` are merged
//!   into one.
//! * [`PathNormalization::DecodeAndMergeSlashes`]: `%2F` and `%5C` are first
//!   decoded to `/`, then `MergeSlashes` applies.
//!
//! The steps run in Istio's documented order: decode slashes, RFC 3986
//! normalization, merge slashes. Dot segments are therefore removed *before*
//! slashes are merged, so an empty segment counts as a segment for `..`
//! (`/a//../b` becomes `/a/b`, as Envoy does, not `/b`).
//!
//! One normalized path is what routing, authorization and forwarding all use.
//! Were any of them to look at a different spelling of the path, a request
//! could be authorized as `/public/../admin` while the backend serves
//! `/admin`: the classic bypasses (`//`, `%2F`, `%5C`, `..`, `#`, `%00`) all
//! exploit such a disagreement. This is also why the targets that no
//! normalization can make unambiguous (a raw `#`, a NUL, a raw backslash, a
//! `..` above the root, a malformed escape, bytes outside visible ASCII) are
//! rejected in every mode, `None` included, instead of being repaired.

use std::borrow::Cow;

/// Istio's `meshConfig.pathNormalization.normalization` values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PathNormalization {
    /// `NONE`: the path is forwarded as received (after the rejections every
    /// mode applies).
    None,
    /// `BASE`: RFC 3986 normalization (decode unreserved escapes once,
    /// uppercase the remaining escapes, remove dot segments).
    Base,
    /// `MERGE_SLASHES`: `BASE`, then consecutive slashes are merged.
    #[default]
    MergeSlashes,
    /// `DECODE_AND_MERGE_SLASHES`: `%2F` and `%5C` are decoded to `/`, then
    /// `MERGE_SLASHES` applies.
    DecodeAndMergeSlashes,
}

impl PathNormalization {
    /// Parses the mesh config spelling, ignoring ASCII case. `DEFAULT` is
    /// this crate's default, [`PathNormalization::MergeSlashes`].
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        const NAMES: [(&str, PathNormalization); 5] = [
            ("NONE", PathNormalization::None),
            ("BASE", PathNormalization::Base),
            ("MERGE_SLASHES", PathNormalization::MergeSlashes),
            ("DECODE_AND_MERGE_SLASHES", PathNormalization::DecodeAndMergeSlashes),
            ("DEFAULT", PathNormalization::MergeSlashes),
        ];
        NAMES.iter().find(|(name, _)| name.eq_ignore_ascii_case(s)).map(|&(_, mode)| mode)
    }

    fn merges_slashes(self) -> bool {
        matches!(self, Self::MergeSlashes | Self::DecodeAndMergeSlashes)
    }

    fn decodes_slashes(self) -> bool {
        self == Self::DecodeAndMergeSlashes
    }
}

/// Why a request target was refused. Every variant is a client error (400):
/// the target cannot be given one unambiguous meaning.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/` (this includes an empty target).
    #[error("request target must start with '/'")]
    NotOriginForm,
    /// A raw `#` anywhere: clients never send fragments, and servers disagree
    /// on whether it ends the path.
    #[error("raw '#' in request target")]
    Fragment,
    /// A raw NUL anywhere, or `%00` in the path: C backends stop at it.
    #[error("NUL (%00) in path")]
    NulByte,
    /// A `..` segment with nothing left to remove.
    #[error("'..' climbs above the root")]
    AboveRoot,
    /// A `%` in the path not followed by two hex digits.
    #[error("malformed percent-escape")]
    InvalidEscape,
    /// A byte that must not appear raw: a control character, space, DEL or a
    /// non-ASCII byte anywhere, or a backslash in the path.
    #[error("invalid byte 0x{0:02X} in request target")]
    InvalidByte(u8),
}

/// The request path after normalization, and the untouched query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedTarget {
    /// The normalized path; always starts with `/`.
    pub path: String,
    /// Everything after the first `?`, verbatim; `None` when there was no `?`.
    pub query: Option<String>,
}

impl NormalizedTarget {
    /// The target to forward upstream: the path, then `?` and the query when
    /// there was one (a bare trailing `?` is kept, since `Some("")` records it).
    #[must_use]
    pub fn path_and_query(&self) -> String {
        match &self.query {
            Some(query) => {
                let mut target = String::with_capacity(self.path.len() + 1 + query.len());
                target.push_str(&self.path);
                target.push('?');
                target.push_str(query);
                target
            }
            None => self.path.clone(),
        }
    }
}

/// [`NormalizedTarget`] borrowing from the request target: the path is
/// only copied when normalization changed it, the query never.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedRef<'a> {
    /// The normalized path; always starts with `/`.
    pub path: Cow<'a, str>,
    /// Everything after the first `?`, verbatim; `None` when there was no `?`.
    pub query: Option<&'a str>,
}

/// Validates the origin-form request `target` (path plus optional `?query`)
/// and normalizes its path according to `mode`.
///
/// # Errors
///
/// A [`PathError`] when the target cannot be given one unambiguous meaning.
/// The checks run in a fixed order, so one target always gets the same error:
/// a raw `#` anywhere ([`PathError::Fragment`]), a raw NUL anywhere
/// ([`PathError::NulByte`]), the path not starting with `/`
/// ([`PathError::NotOriginForm`]), then the path's bytes from left to right
/// (invalid bytes, malformed escapes, `%00`), then the query's bytes, and last
/// the dot segments ([`PathError::AboveRoot`]).
///
/// The query is split off at the first `?` and returned verbatim: it may hold
/// any visible ASCII but `#`, and is neither decoded nor normalized.
pub fn normalize(target: &str, mode: PathNormalization) -> Result<NormalizedTarget, PathError> {
    let NormalizedRef { path, query } = normalize_ref(target, mode)?;
    Ok(NormalizedTarget { path: path.into_owned(), query: query.map(str::to_owned) })
}

/// [`normalize`] without copies where nothing changes (the request path).
///
/// # Errors
///
/// As [`normalize`].
pub fn normalize_ref(target: &str, mode: PathNormalization) -> Result<NormalizedRef<'_>, PathError> {
    if let Some(plain) = plain_target(target) {
        return Ok(plain);
    }
    checked_and_normalized(target, mode)
}

/// The usual target in one pass, when every mode leaves it as it is: no
/// escape, no dot or empty segment, nothing to refuse. `None` sends it to
/// [`checked_and_normalized`], which also names what is wrong, in its
/// fixed order. This runs on every request, and the checks one after the
/// other (`#`, NUL, the split at `?`, the path's bytes, the segment scan)
/// cost five passes over the same bytes.
fn plain_target(target: &str) -> Option<NormalizedRef<'_>> {
    let bytes = target.as_bytes();
    if bytes.first() != Some(&b'/') {
        return None;
    }
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        match TARGET_BYTES[usize::from(byte)] {
            PLAIN => {}
            // A `/` followed by `.` or `/` may start a dot or empty segment.
            SLASH if !matches!(bytes.get(at + 1), Some(b'.' | b'/')) => {}
            QUERY => break,
            _ => return None,
        }
        at += 1;
    }
    let (path, query) = match target.get(at + 1..) {
        // The query is forwarded as it is: any visible ASCII but `#`.
        Some(query) if query.bytes().all(|byte| (0x21..=0x7e).contains(&byte) && byte != b'#') => {
            (&target[..at], Some(query))
        }
        Some(_) => return None,
        None => (target, None),
    };
    Some(NormalizedRef { path: Cow::Borrowed(path), query })
}

/// [`plain_target`]'s byte classes for the path: visible ASCII but `%`, `#`
/// and `\` is plain; anything else takes the checked path.
const TARGET_BYTES: [u8; 256] = {
    let mut classes = [OTHER; 256];
    let mut byte = 0x21;
    while byte <= 0x7e {
        classes[byte] = match byte as u8 {
            b'/' => SLASH,
            b'?' => QUERY,
            b'%' | b'#' | b'\\' => OTHER,
            _ => PLAIN,
        };
        byte += 1;
    }
    classes
};
const PLAIN: u8 = 0;
const SLASH: u8 = 1;
const QUERY: u8 = 2;
const OTHER: u8 = 3;

/// [`normalize_ref`] check by check, in the documented order.
fn checked_and_normalized(target: &str, mode: PathNormalization) -> Result<NormalizedRef<'_>, PathError> {
    let bytes = target.as_bytes();
    if bytes.contains(&b'#') {
        return Err(PathError::Fragment);
    }
    if bytes.contains(&0) {
        return Err(PathError::NulByte);
    }
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    if !path.starts_with('/') {
        return Err(PathError::NotOriginForm);
    }
    let has_escape = validate_path(path.as_bytes())?;
    if let Some(query) = query {
        validate_query(query.as_bytes())?;
    }
    let path = match mode {
        PathNormalization::None => Cow::Borrowed(path),
        _ => normalize_path(path, has_escape, mode)?,
    };
    Ok(NormalizedRef { path, query })
}

/// Checks every byte of the path and every escape in it. Returns whether the
/// path holds any escape, so that escape-free paths skip decoding.
fn validate_path(path: &[u8]) -> Result<bool, PathError> {
    let mut has_escape = false;
    let mut i = 0;
    while let Some(&byte) = path.get(i) {
        match byte {
            b'%' => {
                let value = escape_at(path, i).ok_or(PathError::InvalidEscape)?;
                if value == 0 {
                    return Err(PathError::NulByte);
                }
                has_escape = true;
                i += 3;
                continue;
            }
            // Some servers treat `\` as a separator and some do not: no
            // single normalization is right for both, so refuse it.
            b'\\' => return Err(PathError::InvalidByte(byte)),
            0x21..=0x7e => {}
            _ => return Err(PathError::InvalidByte(byte)),
        }
        i += 1;
    }
    Ok(has_escape)
}

/// The query is forwarded untouched, so it only has to be free of bytes that
/// would let the request line be read differently (`#` and NUL are rejected
/// earlier for the whole target).
fn validate_query(query: &[u8]) -> Result<(), PathError> {
    match query.iter().find(|byte| !(0x21..=0x7e).contains(*byte)) {
        Some(&byte) => Err(PathError::InvalidByte(byte)),
        None => Ok(()),
    }
}

/// Applies a normalizing mode to a validated path.
fn normalize_path(path: &str, has_escape: bool, mode: PathNormalization) -> Result<Cow<'_, str>, PathError> {
    // Decoding comes first, so that `%2E%2E` is a `..` segment (and, in
    // DecodeAndMergeSlashes, `%2F` a separator) by the time segments are read.
    let decoded = if has_escape { Cow::Owned(decode(path, mode.decodes_slashes())?) } else { Cow::Borrowed(path) };
    let merge = mode.merges_slashes();
    if !needs_segment_pass(&decoded, merge) {
        return Ok(decoded);
    }
    remove_dot_segments(&decoded, merge).map(Cow::Owned)
}

/// Decodes the escapes of unreserved characters (and, when `slashes`, of `/`
/// and `\` to `/`) exactly once, and uppercases the hex digits of every escape
/// left encoded. The output only holds escapes that stay encoded, so running
/// it again changes nothing: `%252F` stays `%252F`.
fn decode(path: &str, slashes: bool) -> Result<String, PathError> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        if byte != b'%' {
            // The path was validated as ASCII, so each byte is one char.
            out.push(char::from(byte));
            i += 1;
            continue;
        }
        // Already validated; the error only keeps this function total.
        let value = escape_at(bytes, i).ok_or(PathError::InvalidEscape)?;
        if is_unreserved(value) {
            out.push(char::from(value));
        } else if slashes && (value == b'/' || value == b'\\') {
            out.push('/');
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(value >> 4)]));
            out.push(char::from(HEX[usize::from(value & 0x0f)]));
        }
        i += 3;
    }
    Ok(out)
}

/// Whether the path has a `.` or `..` segment, or (when merging) a `//`: the
/// only cases where the segment pass would change it.
///
/// One pass over the bytes: every such segment starts right after a slash
/// (this runs on every request, and splitting into segments cost more than
/// the rest of the normalization).
fn needs_segment_pass(path: &str, merge: bool) -> bool {
    let bytes = path.as_bytes();
    let ends_segment = |at: usize| bytes.get(at).is_none_or(|&byte| byte == b'/');
    bytes.iter().enumerate().any(|(at, &byte)| {
        byte == b'/'
            && match bytes.get(at + 1) {
                Some(b'/') => merge,
                Some(b'.') => ends_segment(at + 2) || (bytes.get(at + 2) == Some(&b'.') && ends_segment(at + 3)),
                _ => false,
            }
    })
}

/// RFC 3986 §5.2.4 on an absolute path, except that a `..` with no segment
/// left to remove is an error: clamping it would hide a traversal attempt.
/// When `merge`, slashes are merged afterwards (empty segments dropped, a
/// trailing slash kept), which is Envoy's order.
fn remove_dot_segments(path: &str, merge: bool) -> Result<String, PathError> {
    let rest = path.strip_prefix('/').unwrap_or(path);
    let mut kept: Vec<&str> = Vec::new();
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        match segment {
            "." => {}
            ".." => {
                if kept.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
            }
            _ => {
                kept.push(segment);
                continue;
            }
        }
        // A final dot segment leaves the path ending in `/` (`/a/.` is `/a/`).
        if last {
            kept.push("");
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in kept {
        if !(merge && out.ends_with('/')) {
            out.push('/');
        }
        out.push_str(segment);
    }
    // Unreachable (the last segment always adds an entry), but the path must
    // never come out empty.
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// The byte encoded by the escape starting at `bytes[i]` (a `%`), if two hex
/// digits follow it.
fn escape_at(bytes: &[u8], i: usize) -> Option<u8> {
    let high = hex_value(*bytes.get(i + 1)?)?;
    let low = hex_value(*bytes.get(i + 2)?)?;
    Some(high << 4 | low)
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 §2.3 unreserved characters: the only ones whose escapes may be
/// decoded without changing what the URI means.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::PathNormalization::{Base, DecodeAndMergeSlashes, MergeSlashes, None as NoNorm};
    use super::*;

    const ALL: [PathNormalization; 4] = [NoNorm, Base, MergeSlashes, DecodeAndMergeSlashes];
    const NORMALIZING: [PathNormalization; 3] = [Base, MergeSlashes, DecodeAndMergeSlashes];

    fn path(target: &str, mode: PathNormalization) -> String {
        match normalize(target, mode) {
            Ok(normalized) => normalized.path,
            Err(error) => panic!("{target:?} in {mode:?}: unexpected error {error}"),
        }
    }

    fn error(target: &str, mode: PathNormalization) -> PathError {
        match normalize(target, mode) {
            Ok(normalized) => panic!("{target:?} in {mode:?}: expected an error, got {normalized:?}"),
            Err(error) => error,
        }
    }

    /// Asserts the path each mode produces, in the order `None`, `Base`,
    /// `MergeSlashes`, `DecodeAndMergeSlashes`.
    fn assert_paths(target: &str, expected: [&str; 4]) {
        for (mode, expected) in ALL.into_iter().zip(expected) {
            assert_eq!(path(target, mode), expected, "{target:?} in {mode:?}");
        }
    }

    fn assert_error_everywhere(target: &str, expected: PathError) {
        for mode in ALL {
            assert_eq!(error(target, mode), expected, "{target:?} in {mode:?}");
        }
    }

    #[test]
    fn parse_accepts_mesh_config_spellings() {
        assert_eq!(PathNormalization::parse("NONE"), Some(NoNorm));
        assert_eq!(PathNormalization::parse("BASE"), Some(Base));
        assert_eq!(PathNormalization::parse("MERGE_SLASHES"), Some(MergeSlashes));
        assert_eq!(PathNormalization::parse("DECODE_AND_MERGE_SLASHES"), Some(DecodeAndMergeSlashes));
        assert_eq!(PathNormalization::parse("merge_slashes"), Some(MergeSlashes));
        assert_eq!(PathNormalization::parse("Decode_And_Merge_Slashes"), Some(DecodeAndMergeSlashes));
        assert_eq!(PathNormalization::parse("default"), Some(MergeSlashes));
        assert_eq!(PathNormalization::parse(""), None);
        assert_eq!(PathNormalization::parse("MERGE-SLASHES"), None);
        assert_eq!(PathNormalization::parse(" BASE"), None);
        assert_eq!(PathNormalization::default(), MergeSlashes);
    }

    #[test]
    fn plain_paths_are_unchanged() {
        for target in ["/", "/a", "/a/b", "/a/b/", "/a.b/c..d/...", "/.a/..b/a./b..", "/~user/-_.!$&'()*+,;=:@"] {
            assert_paths(target, [target; 4]);
        }
    }

    #[test]
    fn double_slashes() {
        assert_paths("//a///b", ["//a///b", "//a///b", "/a/b", "/a/b"]);
        assert_paths("//", ["//", "//", "/", "/"]);
        assert_paths("/a//", ["/a//", "/a//", "/a/", "/a/"]);
    }

    #[test]
    fn encoded_slash_is_kept_unless_decoding() {
        assert_paths("/a%2Fb", ["/a%2Fb", "/a%2Fb", "/a%2Fb", "/a/b"]);
        assert_paths("/a%2fb", ["/a%2fb", "/a%2Fb", "/a%2Fb", "/a/b"]);
        assert_paths("/a%2F%2Fb", ["/a%2F%2Fb", "/a%2F%2Fb", "/a%2F%2Fb", "/a/b"]);
        assert_paths("/a/%2F/b", ["/a/%2F/b", "/a/%2F/b", "/a/%2F/b", "/a/b"]);
        // An encoded slash is not a separator, so `..` next to it is no dot
        // segment unless the slashes are decoded.
        assert_paths("/a%2F..%2Fb", ["/a%2F..%2Fb", "/a%2F..%2Fb", "/a%2F..%2Fb", "/b"]);
        assert_paths("/a/..%2Fb", ["/a/..%2Fb", "/a/..%2Fb", "/a/..%2Fb", "/b"]);
        assert_eq!(error("/..%2Fb", DecodeAndMergeSlashes), PathError::AboveRoot);
        assert_eq!(path("/..%2Fb", MergeSlashes), "/..%2Fb");
    }

    #[test]
    fn encoded_backslash_is_kept_unless_decoding() {
        assert_paths("/a%5Cb", ["/a%5Cb", "/a%5Cb", "/a%5Cb", "/a/b"]);
        assert_paths("/a%5cb", ["/a%5cb", "/a%5Cb", "/a%5Cb", "/a/b"]);
        assert_paths("/a/%5c..%5c/b", ["/a/%5c..%5c/b", "/a/%5C..%5C/b", "/a/%5C..%5C/b", "/a/b"]);
        assert_eq!(error("/..%5Cetc", DecodeAndMergeSlashes), PathError::AboveRoot);
        // Decoded, this is `//../etc`: the `..` removes the empty segment.
        assert_eq!(path("/%5C..%5Cetc", DecodeAndMergeSlashes), "/etc");
    }

    #[test]
    fn raw_backslash_is_rejected() {
        assert_error_everywhere("/a\\b", PathError::InvalidByte(b'\\'));
        assert_error_everywhere("/..\\..\\etc", PathError::InvalidByte(b'\\'));
        // The query is verbatim and may hold one.
        assert_eq!(normalize("/a?x=\\", Base).map(|t| t.query), Ok(Some("x=\\".to_owned())));
    }

    #[test]
    fn dot_segments() {
        assert_paths("/a/./b", ["/a/./b", "/a/b", "/a/b", "/a/b"]);
        assert_paths("/a/b/../c", ["/a/b/../c", "/a/c", "/a/c", "/a/c"]);
        assert_paths("/a/..", ["/a/..", "/", "/", "/"]);
        assert_paths("/a/.", ["/a/.", "/a/", "/a/", "/a/"]);
        assert_paths("/a/b/..", ["/a/b/..", "/a/", "/a/", "/a/"]);
        assert_paths("/a/b/../", ["/a/b/../", "/a/", "/a/", "/a/"]);
        assert_paths("/.", ["/.", "/", "/", "/"]);
        assert_paths("/./", ["/./", "/", "/", "/"]);
        assert_paths("/a/./../b/./c/.", ["/a/./../b/./c/.", "/b/c/", "/b/c/", "/b/c/"]);
        // Dot segments go before slashes merge (Envoy's order): `..` removes
        // the empty segment.
        assert_paths("/a//../b", ["/a//../b", "/a/b", "/a/b", "/a/b"]);
        assert_paths("//..", ["//..", "/", "/", "/"]);
    }

    #[test]
    fn encoded_dots_are_dot_segments() {
        assert_paths("/a/%2e%2e/b", ["/a/%2e%2e/b", "/b", "/b", "/b"]);
        assert_paths("/a/%2E%2E/b", ["/a/%2E%2E/b", "/b", "/b", "/b"]);
        assert_paths("/a/.%2e/b", ["/a/.%2e/b", "/b", "/b", "/b"]);
        assert_paths("/a/%2e./b", ["/a/%2e./b", "/b", "/b", "/b"]);
        assert_paths("/a/%2e/b", ["/a/%2e/b", "/a/b", "/a/b", "/a/b"]);
        for mode in NORMALIZING {
            assert_eq!(error("/%2e%2e/etc", mode), PathError::AboveRoot);
            assert_eq!(error("/.%2E", mode), PathError::AboveRoot);
        }
    }

    #[test]
    fn dot_dot_above_root_is_rejected() {
        for target in ["/..", "/../", "/../a", "/a/../..", "/a/../../b", "/./..", "/a/b/../../..", "/..//a"] {
            assert_eq!(path(target, NoNorm), target);
            for mode in NORMALIZING {
                assert_eq!(error(target, mode), PathError::AboveRoot, "{target:?} in {mode:?}");
            }
        }
    }

    #[test]
    fn trailing_slashes_are_kept() {
        assert_paths("/a/", ["/a/", "/a/", "/a/", "/a/"]);
        assert_paths("/a/b//", ["/a/b//", "/a/b//", "/a/b/", "/a/b/"]);
        assert_paths("/a%2F", ["/a%2F", "/a%2F", "/a%2F", "/a/"]);
    }

    #[test]
    fn fragment_is_rejected() {
        for target in ["/a#b", "#", "/#", "/a?b#c", "/a?#", "a#"] {
            assert_error_everywhere(target, PathError::Fragment);
        }
        // An encoded `#` is data, and stays encoded.
        assert_paths("/a%23b", ["/a%23b", "/a%23b", "/a%23b", "/a%23b"]);
    }

    #[test]
    fn nul_is_rejected() {
        for target in ["/a%00", "/%00/..", "/a\0b", "/a?\0", "\0"] {
            assert_error_everywhere(target, PathError::NulByte);
        }
        // `%00` in the query is not decoded, so it is just three characters.
        assert_eq!(normalize("/a?x=%00", MergeSlashes).map(|t| t.query), Ok(Some("x=%00".to_owned())));
    }

    #[test]
    fn bad_escapes_are_rejected() {
        for target in ["/%", "/a%", "/%G1", "/%1", "/%1/", "/%%41", "/a%2", "/%g0", "/%0G", "/% 1"] {
            assert_error_everywhere(target, PathError::InvalidEscape);
        }
        // The query is not decoded, so its escapes are not checked.
        assert_eq!(normalize("/a?%G1%", MergeSlashes).map(|t| t.query), Ok(Some("%G1%".to_owned())));
    }

    #[test]
    fn invalid_bytes_are_rejected() {
        assert_error_everywhere("/a b", PathError::InvalidByte(b' '));
        assert_error_everywhere("/a\tb", PathError::InvalidByte(b'\t'));
        assert_error_everywhere("/a\r\nb", PathError::InvalidByte(b'\r'));
        assert_error_everywhere("/a\x7f", PathError::InvalidByte(0x7f));
        assert_error_everywhere("/caf\u{e9}", PathError::InvalidByte(0xc3));
        assert_error_everywhere("/\u{1F600}", PathError::InvalidByte(0xf0));
        assert_error_everywhere("/a?b c", PathError::InvalidByte(b' '));
        assert_error_everywhere("/a?\u{e9}", PathError::InvalidByte(0xc3));
        assert_error_everywhere("/a?\x7f", PathError::InvalidByte(0x7f));
        // Escapes of such bytes are fine: they stay encoded.
        assert_paths(
            "/caf%c3%a9%20%7f",
            ["/caf%c3%a9%20%7f", "/caf%C3%A9%20%7F", "/caf%C3%A9%20%7F", "/caf%C3%A9%20%7F"],
        );
    }

    #[test]
    fn target_must_be_origin_form() {
        for target in ["", "a", "*", "?a", "http://host/a", "%2Fa", ".."] {
            assert_error_everywhere(target, PathError::NotOriginForm);
        }
    }

    #[test]
    fn errors_have_a_fixed_precedence() {
        assert_error_everywhere("a\0#", PathError::Fragment);
        assert_error_everywhere("a\0", PathError::NulByte);
        assert_error_everywhere("a b", PathError::NotOriginForm);
        assert_error_everywhere("/ %G", PathError::InvalidByte(b' '));
        assert_error_everywhere("/%G ", PathError::InvalidEscape);
        assert_error_everywhere("/%00%G", PathError::NulByte);
        assert_error_everywhere("/%G?a b", PathError::InvalidEscape);
        assert_eq!(error("/..?a b", Base), PathError::InvalidByte(b' '));
    }

    #[test]
    fn unreserved_escapes_are_decoded_once() {
        assert_paths("/%7E%7euser", ["/%7E%7euser", "/~~user", "/~~user", "/~~user"]);
        assert_paths(
            "/%41%5a%61%7A%30%39%2D%5F%2E",
            ["/%41%5a%61%7A%30%39%2D%5F%2E", "/AZaz09-_.", "/AZaz09-_.", "/AZaz09-_."],
        );
        // `%25` is not unreserved: `%252F` is never turned into `%2F`, let alone `/`.
        assert_paths("/a%252Fb", ["/a%252Fb", "/a%252Fb", "/a%252Fb", "/a%252Fb"]);
        assert_paths("/a%252fb", ["/a%252fb", "/a%252fb", "/a%252fb", "/a%252fb"]);
        assert_paths("/%252e%252e/a", ["/%252e%252e/a", "/%252e%252e/a", "/%252e%252e/a", "/%252e%252e/a"]);
        assert_paths("/%2541", ["/%2541", "/%2541", "/%2541", "/%2541"]);
    }

    #[test]
    fn remaining_escapes_are_uppercased() {
        assert_paths("/a%3fb%3Ac%2f", ["/a%3fb%3Ac%2f", "/a%3Fb%3Ac%2F", "/a%3Fb%3Ac%2F", "/a%3Fb%3Ac/"]);
        assert_paths("/%e2%82%ac", ["/%e2%82%ac", "/%E2%82%AC", "/%E2%82%AC", "/%E2%82%AC"]);
        // An encoded `?` is part of the path, not the start of the query.
        let target = normalize("/a%3fb?c", Base);
        assert_eq!(target, Ok(NormalizedTarget { path: "/a%3Fb".to_owned(), query: Some("c".to_owned()) }));
    }

    #[test]
    fn query_is_verbatim() {
        let cases = [
            ("/a/./b?x=%2f&y=../..//", "/a/b", Some("x=%2f&y=../..//")),
            ("/a?b?c", "/a", Some("b?c")),
            ("/a?", "/a", Some("")),
            ("/a", "/a", None),
            ("/a/../b?%2F%5C%2e%2e", "/b", Some("%2F%5C%2e%2e")),
            ("/?\\|{}", "/", Some("\\|{}")),
        ];
        for mode in NORMALIZING {
            for (target, expected_path, expected_query) in cases {
                let normalized = normalize(target, mode);
                let expected =
                    NormalizedTarget { path: expected_path.to_owned(), query: expected_query.map(str::to_owned) };
                assert_eq!(normalized, Ok(expected), "{target:?} in {mode:?}");
            }
        }
        assert_eq!(normalize("//a?b//", NoNorm).map(|t| t.path_and_query()), Ok("//a?b//".to_owned()));
    }

    #[test]
    fn path_and_query_keeps_a_bare_question_mark() {
        let with = |query: Option<&str>| NormalizedTarget { path: "/a".to_owned(), query: query.map(str::to_owned) };
        assert_eq!(with(None).path_and_query(), "/a");
        assert_eq!(with(Some("")).path_and_query(), "/a?");
        assert_eq!(with(Some("x=1?y")).path_and_query(), "/a?x=1?y");
    }

    #[test]
    fn none_mode_only_validates() {
        for target in ["//a/./../%2f%7e/", "/%2e%2e/..", "/A%2fb"] {
            assert_eq!(path(target, NoNorm), target);
        }
    }

    #[test]
    fn normalization_is_idempotent_on_tricky_inputs() {
        let targets = [
            "/",
            "//",
            "/a//b",
            "/a/./b",
            "/a/b/../c",
            "/a%2F..%2Fb",
            "/a%2f%2fb",
            "/a%5C..%5C/b",
            "/%2e%2e%2f",
            "/a/%2e%2e%2fb",
            "/a/.%2e/b/",
            "/a%252F%252e%252e",
            "/%7e%7E",
            "/a%3f?x=%2f",
            "/a//..//b//",
            "/.a/..b/...",
            "/a/b/c/./../../d/",
            "/a%2F%2E%2E%2F%2E%2E%2Fb",
            "/a%5c%5c%2e%5cb",
            "/x/%2E/%2e%2E/y?q",
            "/a//../..//b",
            "/%41%62%43/%64?%41",
        ];
        for mode in NORMALIZING {
            for target in targets {
                let Ok(once) = normalize(target, mode) else { continue };
                let twice = normalize(&once.path_and_query(), mode);
                assert_eq!(twice.as_ref(), Ok(&once), "{target:?} in {mode:?}");
                let path_only = normalize(&once.path, mode).map(|t| t.path);
                assert_eq!(path_only, Ok(once.path.clone()), "{target:?} in {mode:?}");
            }
        }
    }

    /// RFC 3986 §5.2.4, transcribed literally (it clamps `..` at the root).
    fn rfc_remove_dot_segments(path: &str) -> String {
        fn pop_segment(output: &mut String) {
            let end = output.rfind('/').unwrap_or(0);
            output.truncate(end);
        }
        let mut input = path.to_owned();
        let mut output = String::new();
        while !input.is_empty() {
            if let Some(rest) = input.strip_prefix("../").or_else(|| input.strip_prefix("./")) {
                input = rest.to_owned();
            } else if input.starts_with("/./") || input == "/." {
                input.replace_range(..2, "");
                if input.is_empty() {
                    input.push('/');
                }
            } else if input.starts_with("/../") || input == "/.." {
                input.replace_range(..3, "");
                if input.is_empty() {
                    input.push('/');
                }
                pop_segment(&mut output);
            } else if input == "." || input == ".." {
                input.clear();
            } else {
                let start = usize::from(input.starts_with('/'));
                let end = input[start..].find('/').map_or(input.len(), |i| i + start);
                output.push_str(&input[..end]);
                input.replace_range(..end, "");
            }
        }
        output
    }

    fn merge_slashes(path: &str) -> String {
        let mut out = String::with_capacity(path.len());
        for c in path.chars() {
            if !(c == '/' && out.ends_with('/')) {
                out.push(c);
            }
        }
        out
    }

    /// Every target made of up to five tokens: no panics, idempotence, the
    /// invariants of each mode, and agreement with the literal RFC algorithm.
    #[test]
    fn exhaustive_small_targets() {
        const TOKENS: [&str; 12] = ["/", ".", "..", "a", "%2e", "%2F", "%5c", "%41", "%25", "?", "%", "%3f"];
        let mut targets = vec![String::from("/")];
        let mut frontier = vec![String::from("/")];
        for _ in 0..5 {
            let mut next = Vec::new();
            for prefix in &frontier {
                for token in TOKENS {
                    next.push(format!("{prefix}{token}"));
                }
            }
            targets.extend(next.iter().cloned());
            frontier = next;
        }
        for target in &targets {
            let raw_path = target.split('?').next().unwrap_or_default();
            for mode in ALL {
                let Ok(normalized) = normalize(target, mode) else { continue };
                let path = normalized.path.as_str();
                assert!(path.starts_with('/'), "{target:?} in {mode:?}: {path:?}");
                assert_eq!(normalize(&normalized.path_and_query(), mode).as_ref(), Ok(&normalized), "{target:?}");
                if mode == NoNorm {
                    assert_eq!(path, raw_path);
                    continue;
                }
                assert!(!path.split('/').any(|s| s == "." || s == ".."), "{target:?} in {mode:?}: {path:?}");
                for (i, _) in path.match_indices('%') {
                    let escape = &path[i + 1..i + 3];
                    assert_eq!(escape, escape.to_ascii_uppercase(), "{target:?} in {mode:?}: {path:?}");
                    assert!(!["41", "2E"].contains(&escape), "{target:?} in {mode:?}: {path:?}");
                }
                if mode != Base {
                    assert!(!path.contains("//"), "{target:?} in {mode:?}: {path:?}");
                }
                if mode == DecodeAndMergeSlashes {
                    assert!(!path.contains("%2F") && !path.contains("%5C"), "{target:?}: {path:?}");
                }
                if !raw_path.contains('%') {
                    let reference = rfc_remove_dot_segments(raw_path);
                    let reference = if mode == Base { reference } else { merge_slashes(&reference) };
                    assert_eq!(path, reference, "{target:?} in {mode:?}");
                }
            }
        }
    }

    proptest::proptest! {
        /// The one-pass scan agrees with reading the path segment by segment.
        #[test]
        fn segment_scan_agrees_with_segments(path in "/[a-c./]{0,12}", merge: bool) {
            let by_segments =
                (merge && path.contains("//")) || path.split('/').any(|segment| segment == "." || segment == "..");
            proptest::prop_assert_eq!(needs_segment_pass(&path, merge), by_segments);
        }

        /// The one-pass plain case gives what the checks one by one give,
        /// in every mode, for targets near each of its edges.
        #[test]
        fn plain_target_agrees_with_the_checks(target in "/?[a-c./?%#\\\\\x00 2F]{0,14}") {
            if let Some(plain) = plain_target(&target) {
                for mode in ALL {
                    proptest::prop_assert_eq!(checked_and_normalized(&target, mode), Ok(plain.clone()));
                }
            }
        }
    }
}
