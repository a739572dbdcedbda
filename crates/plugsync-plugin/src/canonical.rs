//! The one canonical JSON form used wherever bytes are hashed or signed.
//!
//! RFC 8785 (JSON Canonicalization Scheme): keys sorted by UTF-16 code units, no whitespace,
//! numbers in their shortest ECMAScript form. Config hashes, state checksums and signature
//! payloads all go through [`canonical_json`], so they never depend on `serde_json`'s map order
//! (which a dependency enabling `preserve_order` would change for the whole build).

use serde::Serialize;

/// Serialises `value` in RFC 8785 canonical form.
///
/// Fails only for values JSON cannot represent (a map with non-string keys, a NaN).
pub fn canonical_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    serde_jcs::to_vec(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorts_keys_and_drops_whitespace() {
        let cases = [
            (
                json!({"b": 1, "a": {"d": [1, 2], "c": null}}),
                r#"{"a":{"c":null,"d":[1,2]},"b":1}"#,
            ),
            (
                json!({"fast_period": 5, "slow_period": 20}),
                r#"{"fast_period":5,"slow_period":20}"#,
            ),
            (json!(1.0), "1"),
            (json!(0.01), "0.01"),
            (json!("é\n"), "\"é\\n\""),
        ];
        for (value, expected) in cases {
            let bytes = canonical_json(&value).unwrap();
            assert_eq!(String::from_utf8(bytes).unwrap(), expected, "for {value}");
        }
    }
}
