//! Small crate-private helpers shared by several layers.

use dashmap::DashMap;

/// A hasher for the per-key tables: keys are chat and user ids, not chosen freely by
/// senders, and foldhash (randomly seeded per table) hashes them several times faster
/// than SipHash.
pub(crate) type FastState = foldhash::fast::RandomState;

/// A `DashMap` with [`FastState`].
pub(crate) type FastMap<K, V> = DashMap<K, V, FastState>;

/// A new, empty [`FastMap`].
pub(crate) fn fast_map<K: Eq + std::hash::Hash, V>() -> FastMap<K, V> {
    DashMap::with_hasher(FastState::default())
}

/// The deepest nesting JSON records are read back with: serde_json's parser stops at
/// 128 nested arrays and objects.
pub(crate) const JSON_MAX_DEPTH: usize = 127;

/// How deep arrays and objects nest in the JSON text `bytes` (0 for a scalar), counted
/// in one pass without recursion (strings skipped, escapes honoured).
pub(crate) fn json_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0_usize, 0_usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in bytes {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::json_depth;

    #[test]
    fn json_depth_counts_nesting_outside_strings() {
        assert_eq!(json_depth(b"1"), 0);
        assert_eq!(json_depth(br#"{"a":[1,{"b":[]}]}"#), 4);
        assert_eq!(json_depth(br#"{"a":"[[[{{{","b":"\"[["}"#), 1);
        assert_eq!(json_depth(br#"["\\",[["\\\"]"]]]"#), 3);
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(json_depth(deep.as_bytes()), 10_000);
        // The parser's limit is where the count says it is.
        for depth in [super::JSON_MAX_DEPTH, super::JSON_MAX_DEPTH + 1] {
            let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let parsed = serde_json::from_str::<serde_json::Value>(&text);
            assert_eq!(parsed.is_ok(), depth <= super::JSON_MAX_DEPTH, "{depth}");
        }
    }
}
