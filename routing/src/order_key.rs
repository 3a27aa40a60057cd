//! Sort keys that survive insertions: the order of routes sent piecewise.
//!
//! A virtual host's routes are ordered, and the discovery protocol sends
//! each route as its own resource so that one new notebook costs one route
//! on the wire, not the whole table. Positions (0, 1, 2, ...) would shift on
//! every insertion; these keys do not. A key is a base-62 fraction written
//! as ASCII (`0-9A-Za-z`, compared byte-wise, never ending in `0`), so a
//! fresh key always fits between two neighbours.
//!
//! [`assign`] gives every item of a new ordering a key, keeping the previous
//! key of every item in the longest run that is still in order (the longest
//! increasing subsequence of the old keys), so a reorder re-keys as few
//! items as possible.

use std::collections::HashMap;

const DIGITS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const BASE: u128 = 62;
/// 62^21 < 2^128: the longest fraction we do arithmetic on.
const MAX_DIGITS: usize = 21;
/// Keys longer than this make [`assign`] re-key the whole group evenly
/// (one full resend instead of keys that grow without bound).
pub const REBALANCE_LEN: usize = 16;

/// Keys for `items` (in their new order), reusing `previous` keys where the
/// relative order allows it. The result is strictly increasing.
pub fn assign<S: AsRef<str>>(items: &[S], previous: &HashMap<String, String>) -> Vec<String> {
    let old: Vec<Option<&str>> = items.iter().map(|item| previous.get(item.as_ref()).map(String::as_str)).collect();
    let keep = longest_increasing(&old);
    let mut keys: Vec<Option<String>> = vec![None; items.len()];
    for &index in &keep {
        keys[index] = old[index].map(str::to_string);
    }
    if fill_runs(&mut keys).is_none() {
        // Some gap is too deep for fresh keys: start this group over.
        let mut fresh = vec![None; items.len()];
        if fill_runs(&mut fresh).is_none() {
            // Unreachable for fewer than 62^20 items.
            return (0..items.len()).map(|i| format!("{i:020}")).collect();
        }
        keys = fresh;
    }
    keys.into_iter().map(Option::unwrap_or_default).collect()
}

/// Fills every run of `None` with keys between its kept neighbours.
fn fill_runs(keys: &mut [Option<String>]) -> Option<()> {
    let mut index = 0;
    while index < keys.len() {
        if keys[index].is_some() {
            index += 1;
            continue;
        }
        let start = index;
        while index < keys.len() && keys[index].is_none() {
            index += 1;
        }
        let low = if start == 0 { "" } else { keys[start - 1].as_deref().unwrap_or("") };
        let high = keys.get(index).and_then(|k| k.as_deref());
        let fresh = between(low, high, index - start)?;
        for (slot, key) in keys[start..index].iter_mut().zip(fresh) {
            *slot = Some(key);
        }
    }
    if keys.iter().flatten().any(|key| key.len() > REBALANCE_LEN) { None } else { Some(()) }
}

/// `count` increasing keys strictly between `low` ("" = 0) and `high`
/// (None = 1), packed near `low` at the shortest length that leaves room
/// for later insertions after each of them.
pub fn between(low: &str, high: Option<&str>, count: usize) -> Option<Vec<String>> {
    if count == 0 {
        return Some(Vec::new());
    }
    let need = u128::try_from(count).ok()?.checked_add(1)?.checked_mul(BASE)?;
    for length in 1..=MAX_DIGITS {
        let low_units = to_units(low, length)?;
        let high_units = match high {
            Some(high) => to_units(high, length)?,
            None => BASE.pow(u32::try_from(length).ok()?),
        };
        let room = high_units.saturating_sub(low_units);
        if room <= need {
            continue;
        }
        // Even spacing, but never more than one unit of the next shorter
        // length: keys stay short and a later append right after the last
        // one still has room at this length.
        let step = (room / u128::try_from(count + 1).ok()?).min(BASE);
        return Some((1..=count).map(|i| from_units(low_units + step * i as u128, length)).collect());
    }
    None
}

/// `key` truncated or zero-padded to `length` digits, as an integer.
fn to_units(key: &str, length: usize) -> Option<u128> {
    let mut units: u128 = 0;
    let bytes = key.as_bytes();
    for position in 0..length {
        let digit = match bytes.get(position) {
            Some(byte) => DIGITS.iter().position(|d| d == byte)?,
            None => 0,
        };
        units = units * BASE + digit as u128;
    }
    Some(units)
}

/// `length` digits of `units`, trailing zeros dropped.
fn from_units(mut units: u128, length: usize) -> String {
    let mut digits = vec![b'0'; length];
    for slot in digits.iter_mut().rev() {
        *slot = DIGITS[(units % BASE) as usize];
        units /= BASE;
    }
    while digits.last() == Some(&b'0') {
        digits.pop();
    }
    String::from_utf8(digits).unwrap_or_default()
}

/// Indices of a longest strictly increasing subsequence of the known keys.
fn longest_increasing(keys: &[Option<&str>]) -> Vec<usize> {
    // tails[k]: index of the smallest tail of an increasing run of length k+1.
    let mut tails: Vec<usize> = Vec::new();
    let mut before: Vec<Option<usize>> = vec![None; keys.len()];
    for (index, key) in keys.iter().enumerate() {
        let Some(key) = key else { continue };
        let position = tails.partition_point(|&t| keys[t].is_some_and(|tail| tail < *key));
        before[index] = position.checked_sub(1).map(|p| tails[p]);
        if position == tails.len() {
            tails.push(index);
        } else {
            tails[position] = index;
        }
    }
    let mut run = Vec::with_capacity(tails.len());
    let mut cursor = tails.last().copied();
    while let Some(index) = cursor {
        run.push(index);
        cursor = before[index];
    }
    run.reverse();
    run
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn keyed(names: &[String], keys: &[String]) -> HashMap<String, String> {
        names.iter().cloned().zip(keys.iter().cloned()).collect()
    }

    fn names(range: std::ops::Range<usize>) -> Vec<String> {
        range.map(|i| format!("r{i}")).collect()
    }

    fn assert_increasing(keys: &[String]) {
        for pair in keys.windows(2) {
            assert!(pair[0] < pair[1], "{:?} !< {:?}", pair[0], pair[1]);
        }
        assert!(keys.iter().all(|k| !k.is_empty() && !k.ends_with('0')), "{keys:?}");
    }

    #[test]
    fn ten_thousand_fresh_keys_are_short() {
        let items = names(0..10_000);
        let keys = assign(&items, &HashMap::new());
        assert_increasing(&keys);
        assert!(keys.iter().all(|k| k.len() <= 3), "{:?}", keys.last());
    }

    #[test]
    fn one_insertion_changes_no_other_key() {
        let mut items = names(0..1_000);
        let keys = assign(&items, &HashMap::new());
        let previous = keyed(&items, &keys);
        items.insert(500, "new".to_string());
        let next = assign(&items, &previous);
        assert_increasing(&next);
        let changed: Vec<&String> =
            items.iter().zip(&next).filter(|(n, k)| previous.get(*n) != Some(k)).map(|(n, _)| n).collect();
        assert_eq!(changed, vec!["new"]);
    }

    #[test]
    fn appending_before_a_catch_all_a_thousand_times_stays_bounded() {
        // New notebooks land just before the dashboard's catch-all, one at a time.
        let mut items = vec!["first".to_string(), "catch-all".to_string()];
        let mut previous = keyed(&items, &assign(&items, &HashMap::new()));
        let mut rekeyed = 0;
        for i in 0..1_000 {
            items.insert(items.len() - 1, format!("nb{i}"));
            let keys = assign(&items, &previous);
            assert_increasing(&keys);
            rekeyed += items.iter().zip(&keys).filter(|(n, k)| previous.get(*n).is_some_and(|old| old != *k)).count();
            previous = keyed(&items, &keys);
        }
        assert!(previous.values().all(|k| k.len() <= REBALANCE_LEN));
        // A rebalance re-keys the whole group; it must stay rare.
        assert!(rekeyed < 5_000, "{rekeyed} keys changed over 1,000 appends");
    }

    #[test]
    fn between_respects_both_bounds() {
        for (low, high) in [("", Some("1")), ("V", Some("W")), ("Vz", Some("W")), ("z", None), ("zzzz", None)] {
            let keys = between(low, high, 3).unwrap();
            assert!(
                keys.iter().all(|k| k.as_str() > low && high.is_none_or(|h| k.as_str() < h)),
                "{low} {high:?} {keys:?}"
            );
            assert_increasing(&keys);
        }
    }

    proptest! {
        #[test]
        fn any_edit_keeps_keys_increasing_and_kept_items_unchanged(
            start in 0usize..60,
            edits in proptest::collection::vec((0usize..100, 0u8..3), 1..40),
        ) {
            let mut items = names(0..start);
            let mut previous = keyed(&items, &assign(&items, &HashMap::new()));
            let mut next_name = start;
            for (position, op) in edits {
                match op {
                    0 => { items.insert(position % (items.len() + 1), format!("r{next_name}")); next_name += 1; }
                    1 if !items.is_empty() => { items.remove(position % items.len()); }
                    _ if items.len() > 1 => { let item = items.remove(position % items.len()); items.insert((position * 7) % (items.len() + 1), item); }
                    _ => {}
                }
                let keys = assign(&items, &previous);
                assert_increasing(&keys);
                previous = keyed(&items, &keys);
            }
        }
    }
}
