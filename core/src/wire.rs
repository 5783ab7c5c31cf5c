//! The compact binary produce body, for high-throughput clients
//! (`Content-Type: application/vnd.shale.records`).
//!
//! ```text
//! body    = "SHR1" record*
//! record  = flags:u8 [partition:u32] [timestamp_ms:i64] [key_len:u32 key]
//!           value_len:u32 value header_count:u16 (hkey_len:u16 hkey hvalue_len:u32 hvalue)*
//! flags   = bit 0: partition present, bit 1: timestamp present, bit 2: key present
//! ```
//! Integers are little-endian. Decoding never panics.

use bytes::{BufMut, Bytes};

use crate::names::PartitionId;
use crate::record::Header;
use crate::varint::{ReadError, Reader};

pub const CONTENT_TYPE: &str = "application/vnd.shale.records";
pub const MAGIC: &[u8; 4] = b"SHR1";

const HAS_PARTITION: u8 = 1;
const HAS_TIMESTAMP: u8 = 2;
const HAS_KEY: u8 = 4;

/// A record as a producer sends it: partition and timestamp are optional.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProduceRecord {
    pub partition: Option<PartitionId>,
    pub timestamp_ms: Option<i64>,
    pub key: Option<Bytes>,
    pub value: Bytes,
    pub headers: Vec<Header>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("binary body must start with \"SHR1\"")]
    BadMagic,
    #[error("record {index}: {source}")]
    Truncated { index: usize, source: ReadError },
    #[error("record {index}: unknown flags {flags:#04x}")]
    BadFlags { index: usize, flags: u8 },
    #[error("record {index}: header key is not UTF-8")]
    HeaderKey { index: usize },
}

pub fn encode(records: &[ProduceRecord]) -> Bytes {
    let mut buf = Vec::with_capacity(
        4 + records.iter().map(|r| r.value.len() + r.key.as_ref().map_or(0, Bytes::len) + 24).sum::<usize>(),
    );
    buf.put_slice(MAGIC);
    for r in records {
        let mut flags = 0;
        if r.partition.is_some() {
            flags |= HAS_PARTITION;
        }
        if r.timestamp_ms.is_some() {
            flags |= HAS_TIMESTAMP;
        }
        if r.key.is_some() {
            flags |= HAS_KEY;
        }
        buf.put_u8(flags);
        if let Some(p) = r.partition {
            buf.put_u32_le(p);
        }
        if let Some(ts) = r.timestamp_ms {
            buf.put_i64_le(ts);
        }
        if let Some(k) = &r.key {
            buf.put_u32_le(k.len() as u32);
            buf.put_slice(k);
        }
        buf.put_u32_le(r.value.len() as u32);
        buf.put_slice(&r.value);
        buf.put_u16_le(r.headers.len() as u16);
        for h in &r.headers {
            buf.put_u16_le(h.key.len() as u16);
            buf.put_slice(h.key.as_bytes());
            buf.put_u32_le(h.value.len() as u32);
            buf.put_slice(&h.value);
        }
    }
    Bytes::from(buf)
}

pub fn decode(body: Bytes) -> Result<Vec<ProduceRecord>, WireError> {
    if body.len() < MAGIC.len() || &body[..MAGIC.len()] != MAGIC {
        return Err(WireError::BadMagic);
    }
    let mut r = Reader::new(body.slice(MAGIC.len()..));
    let mut out = Vec::new();
    while r.remaining() > 0 {
        let index = out.len();
        let rec = decode_one(&mut r, index).map_err(|e| match e {
            DecodeOne::Read(source) => WireError::Truncated { index, source },
            DecodeOne::Wire(e) => e,
        })?;
        out.push(rec);
    }
    Ok(out)
}

enum DecodeOne {
    Read(ReadError),
    Wire(WireError),
}

impl From<ReadError> for DecodeOne {
    fn from(e: ReadError) -> Self {
        DecodeOne::Read(e)
    }
}

fn decode_one(r: &mut Reader, index: usize) -> Result<ProduceRecord, DecodeOne> {
    let flags = r.u8()?;
    if flags & !(HAS_PARTITION | HAS_TIMESTAMP | HAS_KEY) != 0 {
        return Err(DecodeOne::Wire(WireError::BadFlags { index, flags }));
    }
    let partition = if flags & HAS_PARTITION != 0 { Some(r.u32()?) } else { None };
    let timestamp_ms = if flags & HAS_TIMESTAMP != 0 { Some(r.i64()?) } else { None };
    let key = if flags & HAS_KEY != 0 {
        let n = r.u32()? as usize;
        Some(r.bytes(n)?)
    } else {
        None
    };
    let n = r.u32()? as usize;
    let value = r.bytes(n)?;
    let count = r.u16()?;
    let mut headers = Vec::new();
    for _ in 0..count {
        let n = usize::from(r.u16()?);
        let key = String::from_utf8(r.bytes(n)?.to_vec())
            .map_err(|_| DecodeOne::Wire(WireError::HeaderKey { index }))?;
        let n = r.u32()? as usize;
        headers.push(Header { key, value: r.bytes(n)? });
    }
    Ok(ProduceRecord { partition, timestamp_ms, key, value, headers })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb() -> impl Strategy<Value = ProduceRecord> {
        (
            proptest::option::of(any::<u32>()),
            proptest::option::of(any::<i64>()),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
            proptest::collection::vec(any::<u8>(), 0..64),
            proptest::collection::vec(("[a-z]{0,4}", proptest::collection::vec(any::<u8>(), 0..4)), 0..3),
        )
            .prop_map(|(partition, timestamp_ms, key, value, headers)| ProduceRecord {
                partition,
                timestamp_ms,
                key: key.map(Bytes::from),
                value: Bytes::from(value),
                headers: headers.into_iter().map(|(key, v)| Header { key, value: Bytes::from(v) }).collect(),
            })
    }

    proptest! {
        #[test]
        fn round_trip(records in proptest::collection::vec(arb(), 0..10)) {
            prop_assert_eq!(decode(encode(&records)).ok(), Some(records));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let mut body = MAGIC.to_vec();
            body.extend(bytes);
            let _ = decode(Bytes::from(body));
        }
    }

    #[test]
    fn truncation_is_an_error() {
        let body = encode(&[ProduceRecord { value: Bytes::from_static(b"hello"), ..Default::default() }]);
        assert!(decode(body.slice(..body.len() - 1)).is_err());
        assert!(decode(Bytes::from_static(b"nope")).is_err());
    }
}
