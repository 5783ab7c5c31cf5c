//! The compact binary produce body, for high-throughput clients
//! (`Content-Type: application/vnd.shale.records`).
//!
//! ```text
//! body    = "SHR1" record*
//! record  = flags:u8 [partition:u32] [timestamp_ms:i64] [key_len:u32 key]
//!           [value_len:u32 value] header_count:u16 (hkey_len:u16 hkey hvalue_len:u32 hvalue)*
//! flags   = bit 0: partition present, bit 1: timestamp present, bit 2: key present,
//!           bit 3: no value (a tombstone)
//! ```
//! Integers are little-endian. Decoding never panics.
//!
//! A fetch answered in the same media type (`Accept:
//! application/vnd.shale.records`) is
//! `"SHF1" next_offset:u64 high_watermark:u64 (offset:u64 record)*`, each
//! record with its timestamp present.

use bytes::{BufMut, Bytes};

use crate::names::{Offset, PartitionId};
use crate::record::{Header, Record};
use crate::varint::{ReadError, Reader};

pub const CONTENT_TYPE: &str = "application/vnd.shale.records";
pub const MAGIC: &[u8; 4] = b"SHR1";
pub const FETCH_MAGIC: &[u8; 4] = b"SHF1";

const HAS_PARTITION: u8 = 1;
const HAS_TIMESTAMP: u8 = 2;
const HAS_KEY: u8 = 4;
const TOMBSTONE: u8 = 8;

/// A record as a producer sends it: partition and timestamp are optional.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProduceRecord {
    pub partition: Option<PartitionId>,
    pub timestamp_ms: Option<i64>,
    pub key: Option<Bytes>,
    /// `None`: a tombstone.
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("binary body has the wrong magic (\"SHR1\" for produce, \"SHF1\" for fetch)")]
    BadMagic,
    #[error("record {index}: {source}")]
    Truncated { index: usize, source: ReadError },
    #[error("record {index}: unknown flags {flags:#04x}")]
    BadFlags { index: usize, flags: u8 },
    #[error("record {index}: header key is not UTF-8")]
    HeaderKey { index: usize },
}

pub fn encode(records: &[ProduceRecord]) -> Bytes {
    let mut buf = Vec::with_capacity(4 + records.iter().map(wire_size).sum::<usize>());
    buf.put_slice(MAGIC);
    for r in records {
        put_record(&mut buf, r);
    }
    Bytes::from(buf)
}

fn wire_size(r: &ProduceRecord) -> usize {
    r.value.as_ref().map_or(0, Bytes::len) + r.key.as_ref().map_or(0, Bytes::len) + 24
}

fn put_record(buf: &mut Vec<u8>, r: &ProduceRecord) {
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
    if r.value.is_none() {
        flags |= TOMBSTONE;
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
    if let Some(v) = &r.value {
        buf.put_u32_le(v.len() as u32);
        buf.put_slice(v);
    }
    buf.put_u16_le(r.headers.len() as u16);
    for h in &r.headers {
        buf.put_u16_le(h.key.len() as u16);
        buf.put_slice(h.key.as_bytes());
        buf.put_u32_le(h.value.len() as u32);
        buf.put_slice(&h.value);
    }
}

/// A fetch answer in binary form.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FetchBody {
    pub next_offset: Offset,
    pub high_watermark: Offset,
    pub records: Vec<(Offset, Record)>,
}

pub fn encode_fetch(body: &FetchBody) -> Bytes {
    let size: usize = body.records.iter().map(|(_, r)| r.size() + 40).sum();
    let mut buf = Vec::with_capacity(20 + size);
    buf.put_slice(FETCH_MAGIC);
    buf.put_u64_le(body.next_offset);
    buf.put_u64_le(body.high_watermark);
    for (offset, r) in &body.records {
        buf.put_u64_le(*offset);
        put_record(
            &mut buf,
            &ProduceRecord {
                partition: None,
                timestamp_ms: Some(r.timestamp_ms),
                key: r.key.clone(),
                value: r.value.clone(),
                headers: r.headers.clone(),
            },
        );
    }
    Bytes::from(buf)
}

pub fn decode_fetch(body: Bytes) -> Result<FetchBody, WireError> {
    if body.len() < FETCH_MAGIC.len() || &body[..FETCH_MAGIC.len()] != FETCH_MAGIC {
        return Err(WireError::BadMagic);
    }
    let mut r = Reader::new(body.slice(FETCH_MAGIC.len()..));
    let head = |source| WireError::Truncated { index: 0, source };
    let next_offset = r.u64().map_err(head)?;
    let high_watermark = r.u64().map_err(head)?;
    let mut records = Vec::new();
    while r.remaining() > 0 {
        let index = records.len();
        let offset = r.u64().map_err(|source| WireError::Truncated { index, source })?;
        let rec = decode_one(&mut r, index).map_err(|e| match e {
            DecodeOne::Read(source) => WireError::Truncated { index, source },
            DecodeOne::Wire(e) => e,
        })?;
        let record = Record {
            timestamp_ms: rec.timestamp_ms.unwrap_or_default(),
            key: rec.key,
            value: rec.value,
            headers: rec.headers,
        };
        records.push((offset, record));
    }
    Ok(FetchBody { next_offset, high_watermark, records })
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
    if flags & !(HAS_PARTITION | HAS_TIMESTAMP | HAS_KEY | TOMBSTONE) != 0 {
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
    let value = if flags & TOMBSTONE == 0 {
        let n = r.u32()? as usize;
        Some(r.bytes(n)?)
    } else {
        None
    };
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
            proptest::option::weighted(0.9, proptest::collection::vec(any::<u8>(), 0..64)),
            proptest::collection::vec(("[a-z]{0,4}", proptest::collection::vec(any::<u8>(), 0..4)), 0..3),
        )
            .prop_map(|(partition, timestamp_ms, key, value, headers)| ProduceRecord {
                partition,
                timestamp_ms,
                key: key.map(Bytes::from),
                value: value.map(Bytes::from),
                headers: headers.into_iter().map(|(key, v)| Header { key, value: Bytes::from(v) }).collect(),
            })
    }

    proptest! {
        #[test]
        fn round_trip(records in proptest::collection::vec(arb(), 0..10)) {
            prop_assert_eq!(decode(encode(&records)).ok(), Some(records));
        }

        #[test]
        fn fetch_round_trip(records in proptest::collection::vec(arb(), 0..10), next in any::<u64>()) {
            let body = FetchBody {
                next_offset: next,
                high_watermark: next,
                records: records
                    .into_iter()
                    .enumerate()
                    .map(|(i, r)| (i as u64, Record { timestamp_ms: r.timestamp_ms.unwrap_or(0), key: r.key, value: r.value, headers: r.headers }))
                    .collect(),
            };
            prop_assert_eq!(decode_fetch(encode_fetch(&body)).ok(), Some(body));
        }

        #[test]
        fn arbitrary_fetch_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let mut body = FETCH_MAGIC.to_vec();
            body.extend(bytes);
            let _ = decode_fetch(Bytes::from(body));
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
        let body =
            encode(&[ProduceRecord { value: Some(Bytes::from_static(b"hello")), ..Default::default() }]);
        assert!(decode(body.slice(..body.len() - 1)).is_err());
        assert!(decode(Bytes::from_static(b"nope")).is_err());
    }
}
