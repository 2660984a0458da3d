//! Integers too large for 64 bits. JSON allows any size and MPREG's Python client sends Python's
//! unbounded ints, but a parsed request holds numbers as 64-bit integers or doubles: a larger
//! integer would be rounded silently (`123456789012345678901234567890` came back as
//! `1.2345678901234568e29`). Such a request is refused instead, naming the number, so nothing
//! changes a value without saying so.

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
