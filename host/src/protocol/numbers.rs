//! Integers too large for 64 bits. JSON allows any size and MPREG's Python client sends Python's
//! unbounded ints, but a parsed request holds numbers as 64-bit integers or doubles: a larger
//! integer would be rounded silently (`123456789012345678901234567890` came back as
//! `1.2345678901234568e29`). Such a request is refused instead, naming the number, so nothing
//! changes a value without saying so.

/// Whether `v` holds a number that may have been such an integer: a double with no fraction,
/// beyond the 64-bit range. Cheap, and false for nearly every request, so the text is scanned
/// ([`oversized_integer`]) only when it is true (`1e20` written as a float also passes here).
pub fn may_hold_oversized(v: &serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::Number(n) => n
            .as_f64()
            .is_some_and(|f| n.is_f64() && f.fract() == 0.0 && f.abs() >= 9.2e18),
        Value::Array(a) => a.iter().any(may_hold_oversized),
        Value::Object(o) => o.values().any(may_hold_oversized),
        _ => false,
    }
}

/// The first integer literal in `json` (outside strings) that fits neither `i64` nor `u64`.
///
/// A linear scan with no allocation; it only looks closer at runs of 19 digits or more.
pub fn oversized_integer(json: &[u8]) -> Option<&str> {
    let bytes = json;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                // Skip the string, escapes included.
                i += 1;
                while i < bytes.len() {
                    match bytes[i] {
                        b'\\' => i += 2,
                        b'"' => break,
                        _ => i += 1,
                    }
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                if bytes[i] == b'-' {
                    i += 1;
                }
                let digits = i;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
                let is_integer = !matches!(bytes.get(i), Some(b'.' | b'e' | b'E'));
                // Skip the rest of a float.
                let end = i;
                while i < bytes.len()
                    && matches!(bytes[i], b'.' | b'e' | b'E' | b'+' | b'-' | b'0'..=b'9')
                {
                    i += 1;
                }
                if is_integer && end - digits >= 19 {
                    // ASCII: a sign and digits.
                    let literal = std::str::from_utf8(&json[start..end]).ok()?;
                    if literal.parse::<i64>().is_err() && literal.parse::<u64>().is_err() {
                        return Some(literal);
                    }
                }
            }
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::oversized_integer;

    #[test]
    fn the_quick_check_passes_only_big_integral_doubles() {
        use super::may_hold_oversized;
        use serde_json::json;
        assert!(!may_hold_oversized(&json!([1, 2.5, "x", {"a": u64::MAX}])));
        let big: serde_json::Value =
            serde_json::from_str("[{\"a\": 123456789012345678901234567890}]").expect("json");
        assert!(may_hold_oversized(&big));
        assert!(!may_hold_oversized(&json!([1.0e300_f64.sqrt().fract()])));
    }

    #[test]
    fn finds_integers_past_64_bits_and_nothing_else() {
        assert_eq!(oversized_integer(br#"{"a":[1,2,3]}"#), None);
        assert_eq!(
            oversized_integer(b"[18446744073709551615,-9223372036854775808]"),
            None
        );
        assert_eq!(
            oversized_integer(b"[1, 18446744073709551616]"),
            Some("18446744073709551616")
        );
        assert_eq!(
            oversized_integer(b"[-9223372036854775809]"),
            Some("-9223372036854775809")
        );
        // Floats and strings may hold any digits.
        assert_eq!(
            oversized_integer(b"[123456789012345678901234567890.5, 1e400]"),
            None
        );
        assert_eq!(
            oversized_integer(
                br#"["123456789012345678901234567890", "a\"1234567890123456789012"]"#
            ),
            None
        );
        assert_eq!(
            oversized_integer(br#"{"k\\":123456789012345678901234567890}"#),
            Some("123456789012345678901234567890")
        );
    }
}
