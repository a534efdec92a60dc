//! The one place that knows how values become bytes: bincode 2 over serde. The entry
//! header records the codec, so a change here is a new codec number, never a misread.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Error;

/// The codec number written in entry headers for bincode 2 (standard configuration).
pub const BINCODE2: u32 = 1;

/// Encodes a value.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).map_err(|e| Error::Encode(e.to_string()))
}

/// Decodes a value; `None` if the bytes are not a valid encoding (a damaged entry, or one
/// written by a weave whose types were laid out otherwise).
///
/// bincode makes room for a string before it reads it, trusting the length it read: a
/// damaged length would ask for terabytes (an abort) or more than a `Vec` can hold (a
/// panic). So decoding runs under bincode's limit on what it may claim, set from the input's
/// size: a valid encoding claims at most 16 bytes per byte it reads (a `u128` in a 1-byte
/// varint; strings claim their own length), so a limit of 16 times the input, rounded up to
/// a power of 16, refuses every length that the input cannot hold and no valid encoding.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    let most = bytes.len().saturating_mul(16);
    macro_rules! within {
        ($($bits:literal)*) => {
            $(if most <= 1 << $bits {
                return decode_within::<T, { 1 << $bits }>(bytes);
            })*
        };
    }
    within!(16 20 24 28 32 36 40 44);
    // No input this large fits in memory to be decoded.
    decode_within::<T, { 1 << 48 }>(bytes)
}

fn decode_within<T: DeserializeOwned, const LIMIT: usize>(bytes: &[u8]) -> Option<T> {
    match bincode::serde::decode_from_slice(bytes, bincode::config::standard().with_limit::<LIMIT>()) {
        Ok((v, used)) if used == bytes.len() => Some(v),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weave_core::{Batch, Record, Value};

    #[test]
    fn batches_round_trip_including_nested_values() {
        let b = Batch::from_records(&[
            Record::new().with("t", "héllo").with("n", 3i64).with("x", 1.5),
            Record::new().with("t", Value::Null).with("n", -1i64).with("x", Value::List(vec![Value::Bool(true)])),
        ]);
        let bytes = encode(&vec![b.clone()]).unwrap();
        let back: Vec<Batch> = decode(&bytes).unwrap();
        assert_eq!(back, vec![b]);
    }

    #[test]
    fn a_length_beyond_the_input_decodes_to_none_without_allocating_it() {
        // regression (found by the `cache_entry` fuzz target): bincode makes room for a
        // string before reading it, so a damaged length panicked ("capacity overflow" at
        // 2^64 - 1) or aborted the process (out of memory at 2^40): a damaged entry, or one
        // a weave with another batch layout wrote, must be a miss instead.
        let b = Batch::from_records(&[Record::new().with("t", "hello")]);
        let bytes = encode(&vec![(0u64, b)]).unwrap();
        let at = bytes.windows(6).position(|w| w == b"\x05hello").expect("the string's length prefix");
        for huge in [u64::MAX, 1 << 40, 1 << 32, 1 << 20] {
            let mut bad = bytes[..at].to_vec();
            bad.push(0xfd); // a u64 follows
            bad.extend_from_slice(&huge.to_le_bytes());
            bad.extend_from_slice(&bytes[at + 1..]);
            assert!(decode::<Vec<(u64, Batch)>>(&bad).is_none(), "length {huge}");
        }
    }

    #[test]
    fn large_payloads_still_decode() {
        // The bound on what decoding may allocate grows with the input: a part of many
        // numbers (8 bytes of memory for a 1-byte varint) and long strings still decodes.
        let big: Vec<(u64, String)> = (0..200_000u64).map(|i| (i % 100, "x".repeat((i % 7) as usize * 40))).collect();
        let back: Vec<(u64, String)> = decode(&encode(&big).unwrap()).unwrap();
        assert_eq!(back, big);
        let small: Vec<u64> = vec![1; 100_000];
        assert_eq!(decode::<Vec<u64>>(&encode(&small).unwrap()), Some(small));
    }

    /// A value of lists inside lists, `depth` of them, around a null.
    fn nested(depth: usize) -> Value {
        (0..depth).fold(Value::Null, |v, _| Value::List(vec![v]))
    }

    // regression (fuzz/artifacts-found/cache_entry/deep-nested-list.part): decoding recursed
    // once per level of nesting, so a stored part holding a list nested 20,000 deep
    // overflowed the stack and killed the process; it must be a miss like any damage.
    #[test]
    fn values_nested_too_deep_decode_to_none_without_exhausting_the_stack() {
        let part = include_bytes!("../../../fuzz/artifacts-found/cache_entry/deep-nested-list.part");
        assert!(decode::<Vec<(u64, Batch)>>(part).is_none());
        // A list is its variant number (5) and its length (1), a null is 0.
        for depth in [weave_core::MAX_DEPTH + 1, 20_000, 1_000_000] {
            let mut bytes = [5u8, 1].repeat(depth);
            bytes.push(0);
            assert!(decode::<Value>(&bytes).is_none(), "{depth} deep");
            let mut in_a_map = vec![6u8, 1, 1, b'k'];
            in_a_map.extend_from_slice(&bytes);
            assert!(decode::<Value>(&in_a_map).is_none(), "{depth} deep in a map");
        }
    }

    #[test]
    fn values_as_deep_as_allowed_round_trip_and_deeper_ones_are_not_stored() {
        let deepest = nested(weave_core::MAX_DEPTH);
        let b = Batch::from_records(&[Record::new().with("v", deepest.clone())]);
        let back: Vec<Batch> = decode(&encode(&vec![b.clone()]).unwrap()).unwrap();
        assert_eq!(back, vec![b]);
        let mut m = weave_core::Map::new();
        m.insert("k", nested(weave_core::MAX_DEPTH - 1));
        assert_eq!(decode::<Value>(&encode(&Value::Map(m.clone())).unwrap()), Some(Value::Map(m)));
        // What could not be read back is not written.
        let err = encode(&nested(weave_core::MAX_DEPTH + 1)).unwrap_err();
        assert!(err.to_string().contains("nested more than 128 deep"), "{err}");
    }

    #[test]
    fn damaged_bytes_decode_to_none_not_a_panic() {
        let b = Batch::from_records(&[Record::new().with("t", "hello world")]);
        let bytes = encode(&vec![b]).unwrap();
        for cut in 0..bytes.len() {
            assert!(decode::<Vec<Batch>>(&bytes[..cut]).is_none(), "truncated at {cut}");
        }
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x5a;
            // Any outcome but a panic is fine here: the header's hash catches flips.
            let _ = decode::<Vec<Batch>>(&bad);
        }
    }

    // The cache stores step outputs: a batch read back must hold its fields in their order
    // and its numbers exactly, as the run that stored it had them.
    #[test]
    fn batches_keep_field_order_and_exact_numbers() {
        let lines = [
            r#"{"zeta":1,"alpha":{"y":1,"b":2},"mid":18446744073709551615,"big":-9223372036854775809,"x":12345678901234567}"#,
            r#"{"zeta":2,"alpha":{"b":3,"y":4},"mid":5,"big":1000000000000000000000000000000,"x":0.5}"#,
        ];
        let records: Vec<Record> = lines
            .iter()
            .map(|l| match Value::from_json(l).unwrap() {
                Value::Map(m) => m.into_iter().collect(),
                other => panic!("{other}"),
            })
            .collect();
        let b = Batch::from_records(&records);
        let back: Vec<Batch> = decode(&encode(&vec![b.clone()]).unwrap()).unwrap();
        assert_eq!(back, vec![b]);
        let text: Vec<String> = back[0].to_records().iter().map(Record::to_string).collect();
        assert_eq!(text, lines);
        assert_eq!(back[0].schema().to_string(), "{zeta: int, alpha: any, mid: uint, big: any, x: any}");
    }

    // regression (found by the `cache_entry` fuzz target): a stored part whose big integer
    // held other text than digits decoded, and writing the record as JSON then panicked
    // ("a Display implementation returned an error").
    #[test]
    fn a_big_integer_that_is_not_one_is_refused_when_decoded() {
        for text in ["12a", "", "-", "007", "1.5", "{}", "123"] {
            let forged = Value::List(vec![Value::BigInt(text.to_owned())]);
            assert_eq!(decode::<Value>(&encode(&forged).unwrap()), None, "{text:?}");
        }
        let big = Value::List(vec![Value::BigInt("-100000000000000000000000".to_owned())]);
        assert_eq!(decode::<Value>(&encode(&big).unwrap()), Some(big));
    }

    // The bytes of a value as weave wrote them before timestamps, dates, decimals and
    // binary values were added (bincode's standard form, worked out by hand: a variant's
    // number, then its content), which must still decode: new variants go at the end.
    #[test]
    fn entries_written_before_the_new_types_still_decode() {
        let old: &[u8] = &[5, 4, 2, 3, 4, 1, b'a', 6, 1, 1, b'k', 1, 1, 0];
        let v = Value::List(vec![
            Value::Int(-2),
            Value::from("a"),
            Value::Map(weave_core::Map::from([("k", Value::Bool(true))])),
            Value::Null,
        ]);
        assert_eq!(decode::<Value>(old), Some(v.clone()));
        assert_eq!(encode(&v).unwrap(), old, "old variants are written as they were");
    }

    #[test]
    fn timestamps_dates_decimals_binary_and_key_value_maps_round_trip() {
        use weave_core::{Decimal, Map, TimeUnit, Timestamp};
        let zone = Some(std::sync::Arc::new("Europe/Paris".to_owned()));
        let mut kv = Map::from([("x", 1i64)]);
        kv.set_key_value(true);
        let v = Value::List(vec![
            Value::Timestamp(Timestamp::new(-5, TimeUnit::Nanosecond, zone)),
            Value::Timestamp(Timestamp::new(1_700_000_000_000, TimeUnit::Millisecond, None)),
            Value::Date(-3),
            Value::Decimal(Decimal::new(-(10i128.pow(37)), 38, 4).unwrap()),
            Value::Binary(vec![0, 255, 7]),
            Value::Map(kv),
        ]);
        let back: Value = decode(&encode(&v).unwrap()).unwrap();
        assert_eq!(back, v);
        let Value::List(items) = back else { panic!() };
        assert!(matches!(&items[5], Value::Map(m) if m.is_key_value()), "the mark survives");
        // A forged decimal with more digits than its precision is refused.
        let forged = Value::Decimal(Decimal::new(99, 2, 0).unwrap());
        let mut bytes = encode(&forged).unwrap();
        let at = bytes.len() - 2;
        bytes[at] = 1;
        assert_eq!(decode::<Value>(&bytes), None);
    }
}
