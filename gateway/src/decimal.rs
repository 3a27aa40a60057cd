//! Unsigned integers as ASCII digits without `fmt`: the access log and the
//! per-request cluster key write numbers on every request.

/// `value`'s decimal digits, written at the end of `buffer` (20 bytes: the
/// longest `u64`).
pub fn digits(value: u64, buffer: &mut [u8; 20]) -> &[u8] {
    let mut at = buffer.len();
    let mut rest = value;
    loop {
        at -= 1;
        buffer[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    &buffer[at..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_display_writes_them() {
        for value in [0, 7, 10, 65_535, 1_000_000, u64::MAX] {
            assert_eq!(digits(value, &mut [0; 20]), value.to_string().as_bytes());
        }
    }
}
