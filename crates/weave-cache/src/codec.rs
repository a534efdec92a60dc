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

/// Decodes a value; `None` if the bytes are not a valid encoding (a damaged entry).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    match bincode::serde::decode_from_slice(bytes, bincode::config::standard()) {
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
}
