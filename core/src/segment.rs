//! Version 1 of the segment object format.
//!
//! ```text
//! segment  = "SHALESEG" version:u8 chunk* directory trailer
//! chunk    = crc32c:u32 compression:u8 record_count:u32 base_timestamp:i64
//!            uncompressed_len:u32 payload_len:u32 payload
//!            (the CRC covers every chunk byte after itself)
//! payload  = record*            (zstd-compressed when compression = 1)
//! record   = length:varint attributes:u8 timestamp_delta:varint offset_delta:varint
//!            key_len:varint key value_len:varint value header_count:varint
//!            (a length of -1 is a null key, or a null value: a tombstone)
//!            (hkey_len:varint hkey hvalue_len:varint hvalue)*
//! directory= count:u32 (topic_len:u16 topic partition:u32 position:u64 len:u32
//!            record_count:u32 min_timestamp:i64 max_timestamp:i64)*
//! trailer  = directory_len:u32 directory_crc32c:u32 "SHALEDIR"
//! ```
//!
//! Integers are little-endian; varints are zigzag LEB128 as in Kafka's record
//! batch v2, with `key_len = -1` for a null key. Each chunk holds one
//! partition's records, so a reader fetches exactly one byte range. The
//! directory lets a reader holding only the object find any partition.
//! Offsets are not stored: the controller assigns a chunk's base offset when it
//! commits the segment, and `offset_delta` is the record's place in its chunk.
//! Decoding never panics: every malformed input is a [`SegmentError`].

use std::cell::RefCell;
use std::io::Cursor;

use bytes::{BufMut, Bytes};
use serde::{Deserialize, Serialize};

use crate::record::{Header, Record};
use crate::varint::{ReadError, Reader, put_varint};

pub const MAGIC: &[u8; 8] = b"SHALESEG";
pub const TRAILER_MAGIC: &[u8; 8] = b"SHALEDIR";
pub const VERSION: u8 = 1;
const HEADER_LEN: usize = MAGIC.len() + 1;
const CHUNK_HEADER_LEN: usize = 4 + 1 + 4 + 8 + 4 + 4;
const TRAILER_LEN: usize = 4 + 4 + TRAILER_MAGIC.len();
/// Largest decoded chunk a reader accepts; bounds memory on hostile input.
pub const MAX_CHUNK_BYTES: usize = 256 << 20;
/// The smallest encoded record: length, attributes, three varints, two lengths.
const MIN_RECORD_LEN: usize = 7;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    #[error("not a shale segment (bad magic)")]
    BadMagic,
    #[error("unsupported segment version {0}")]
    UnsupportedVersion(u8),
    #[error("chunk checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    ChecksumMismatch { stored: u32, computed: u32 },
    #[error("unknown compression {0}")]
    UnknownCompression(u8),
    #[error("malformed segment: {0}")]
    Malformed(String),
    #[error("chunk too large: {0} bytes")]
    TooLarge(usize),
    #[error("decompression failed: {0}")]
    Decompress(String),
}

impl From<ReadError> for SegmentError {
    fn from(e: ReadError) -> Self {
        SegmentError::Malformed(e.to_string())
    }
}

/// How a chunk's payload is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    #[default]
    Zstd,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Zstd => "zstd",
        }
    }

    fn id(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Zstd => 1,
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Compression::None),
            "zstd" => Ok(Compression::Zstd),
            other => Err(format!("unknown compression {other:?} (none, zstd)")),
        }
    }
}

/// One directory entry: where a partition's chunk sits and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkEntry {
    pub topic: String,
    pub partition: u32,
    /// Byte position of the chunk from the start of the object.
    pub position: u64,
    pub len: u32,
    pub record_count: u32,
    pub min_timestamp_ms: i64,
    pub max_timestamp_ms: i64,
}

/// An encoded segment: the object's bytes and its chunk directory.
#[derive(Debug, Clone)]
pub struct Segment {
    pub bytes: Bytes,
    pub chunks: Vec<ChunkEntry>,
}

/// Builds one segment object, a chunk at a time.
pub struct SegmentWriter {
    buf: Vec<u8>,
    chunks: Vec<ChunkEntry>,
    compression: Compression,
}

impl SegmentWriter {
    pub fn new(compression: Compression) -> Self {
        Self::with_capacity(compression, 64 * 1024)
    }

    /// A writer whose buffer is allocated once for about `bytes` of records.
    pub fn with_capacity(compression: Compression, bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(bytes + 4096);
        buf.put_slice(MAGIC);
        buf.put_u8(VERSION);
        Self { buf, chunks: Vec::new(), compression }
    }

    /// Appends one partition's records as a chunk. Records must be non-empty.
    pub fn add_chunk(&mut self, topic: &str, partition: u32, records: &[Record]) -> Result<(), SegmentError> {
        if records.is_empty() {
            return Err(SegmentError::Malformed("empty chunk".into()));
        }
        if topic.len() > usize::from(u16::MAX) {
            return Err(SegmentError::Malformed("topic name too long".into()));
        }
        let position = self.buf.len();
        write_chunk(&mut self.buf, records, self.compression)?;
        let len = self.buf.len() - position;
        let len = u32::try_from(len).map_err(|_| SegmentError::TooLarge(len))?;
        self.chunks.push(ChunkEntry {
            topic: topic.to_owned(),
            partition,
            position: position as u64,
            len,
            record_count: records.len() as u32,
            min_timestamp_ms: records.iter().map(|r| r.timestamp_ms).min().unwrap_or(0),
            max_timestamp_ms: records.iter().map(|r| r.timestamp_ms).max().unwrap_or(0),
        });
        Ok(())
    }

    pub fn finish(mut self) -> Segment {
        let mut dir = Vec::new();
        dir.put_u32_le(self.chunks.len() as u32);
        for c in &self.chunks {
            dir.put_u16_le(c.topic.len() as u16);
            dir.put_slice(c.topic.as_bytes());
            dir.put_u32_le(c.partition);
            dir.put_u64_le(c.position);
            dir.put_u32_le(c.len);
            dir.put_u32_le(c.record_count);
            dir.put_i64_le(c.min_timestamp_ms);
            dir.put_i64_le(c.max_timestamp_ms);
        }
        let crc = crc32c::crc32c(&dir);
        self.buf.put_slice(&dir);
        // trailer: length and checksum of the directory, then the magic
        self.buf.put_u32_le(dir.len() as u32);
        self.buf.put_u32_le(crc);
        self.buf.put_slice(TRAILER_MAGIC);
        Segment { bytes: Bytes::from(self.buf), chunks: self.chunks }
    }
}

fn varint_len(value: i64) -> usize {
    let v = ((value << 1) ^ (value >> 63)) as u64;
    (64 - v.leading_zeros() as usize).max(1).div_ceil(7)
}

/// Appends the records' framing to `out`, with no intermediate copies.
fn encode_records(out: &mut impl BufMut, records: &[Record], base_ts: i64) {
    for (i, r) in records.iter().enumerate() {
        let ts_delta = r.timestamp_ms.wrapping_sub(base_ts);
        let key_len = r.key.as_ref().map_or(-1, |k| k.len() as i64);
        let mut len = 1 + varint_len(ts_delta) + varint_len(i as i64) + varint_len(key_len);
        len += r.key.as_ref().map_or(0, Bytes::len);
        let value_len = r.value.as_ref().map_or(-1, |v| v.len() as i64);
        len += varint_len(value_len)
            + r.value.as_ref().map_or(0, Bytes::len)
            + varint_len(r.headers.len() as i64);
        for h in &r.headers {
            len += varint_len(h.key.len() as i64)
                + h.key.len()
                + varint_len(h.value.len() as i64)
                + h.value.len();
        }
        put_varint(out, len as i64);
        out.put_u8(0); // attributes
        put_varint(out, ts_delta);
        put_varint(out, i as i64);
        put_varint(out, key_len);
        if let Some(k) = &r.key {
            out.put_slice(k);
        }
        put_varint(out, value_len);
        if let Some(v) = &r.value {
            out.put_slice(v);
        }
        put_varint(out, r.headers.len() as i64);
        for h in &r.headers {
            put_varint(out, h.key.len() as i64);
            out.put_slice(h.key.as_bytes());
            put_varint(out, h.value.len() as i64);
            out.put_slice(&h.value);
        }
    }
}

thread_local! {
    /// Per-thread scratch for a chunk's uncompressed records and a reusable
    /// zstd context: a flush then allocates only its segment buffer.
    static SCRATCH: RefCell<(Vec<u8>, Option<zstd::bulk::Compressor<'static>>)> =
        const { RefCell::new((Vec::new(), None)) };
}

/// Scratch larger than this is released after use rather than kept.
const MAX_KEPT_SCRATCH: usize = 16 << 20;

/// Appends one chunk (header, then payload) to `buf`.
fn write_chunk(buf: &mut Vec<u8>, records: &[Record], compression: Compression) -> Result<(), SegmentError> {
    let base_ts = records.first().map_or(0, |r| r.timestamp_ms);
    let start = buf.len();
    buf.put_bytes(0, CHUNK_HEADER_LEN);
    let (used, raw_len) = match compression {
        Compression::None => {
            encode_records(buf, records, base_ts);
            (Compression::None, buf.len() - start - CHUNK_HEADER_LEN)
        }
        Compression::Zstd => SCRATCH.with_borrow_mut(|(raw, compressor)| {
            raw.clear();
            encode_records(raw, records, base_ts);
            let used = compress_into(buf, raw, compressor);
            let raw_len = raw.len();
            if raw.capacity() > MAX_KEPT_SCRATCH {
                *raw = Vec::new();
            }
            (used, raw_len)
        }),
    };
    let payload_len = buf.len() - start - CHUNK_HEADER_LEN;
    if raw_len > MAX_CHUNK_BYTES {
        buf.truncate(start);
        return Err(SegmentError::TooLarge(raw_len));
    }
    let mut header = &mut buf[start + 4..start + CHUNK_HEADER_LEN];
    header.put_u8(used.id());
    header.put_u32_le(records.len() as u32);
    header.put_i64_le(base_ts);
    header.put_u32_le(raw_len as u32);
    header.put_u32_le(payload_len as u32);
    let crc = crc32c::crc32c(&buf[start + 4..]);
    buf[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Appends `raw` zstd-compressed to `buf` when that is smaller, else as is.
fn compress_into(
    buf: &mut Vec<u8>,
    raw: &[u8],
    compressor: &mut Option<zstd::bulk::Compressor<'static>>,
) -> Compression {
    let at = buf.len();
    if compressor.is_none() {
        *compressor = zstd::bulk::Compressor::new(1).ok();
    }
    if let Some(c) = compressor.as_mut() {
        buf.reserve(zstd::zstd_safe::compress_bound(raw.len()));
        let mut cursor = Cursor::new(&mut *buf);
        cursor.set_position(at as u64);
        // keep zstd only when it pays
        match c.compress_to_buffer(raw, &mut cursor) {
            Ok(n) if n < raw.len() => return Compression::Zstd,
            _ => buf.truncate(at),
        }
    }
    buf.extend_from_slice(raw);
    Compression::None
}

/// Decodes one chunk (exactly its byte range), verifying its checksum.
pub fn decode_chunk(chunk: Bytes) -> Result<Vec<Record>, SegmentError> {
    if chunk.len() < CHUNK_HEADER_LEN {
        return Err(SegmentError::Malformed(format!("chunk of {} bytes", chunk.len())));
    }
    let mut r = Reader::new(chunk.clone());
    let stored = r.u32()?;
    let computed = crc32c::crc32c(&chunk[4..]);
    if stored != computed {
        return Err(SegmentError::ChecksumMismatch { stored, computed });
    }
    let compression = r.u8()?;
    let record_count = r.u32()? as usize;
    let base_ts = r.i64()?;
    let uncompressed_len = r.u32()? as usize;
    let payload_len = r.u32()? as usize;
    if payload_len != r.remaining() {
        return Err(SegmentError::Malformed(format!(
            "payload length {payload_len} but {} bytes follow",
            r.remaining()
        )));
    }
    if uncompressed_len > MAX_CHUNK_BYTES {
        return Err(SegmentError::TooLarge(uncompressed_len));
    }
    let payload = r.bytes(payload_len)?;
    let raw = match compression {
        0 => payload,
        1 => {
            let out = zstd::bulk::decompress(&payload, uncompressed_len)
                .map_err(|e| SegmentError::Decompress(e.to_string()))?;
            Bytes::from(out)
        }
        other => return Err(SegmentError::UnknownCompression(other)),
    };
    if raw.len() != uncompressed_len {
        return Err(SegmentError::Malformed(format!(
            "payload decodes to {} bytes, header says {uncompressed_len}",
            raw.len()
        )));
    }
    decode_records(raw, record_count, base_ts)
}

fn decode_records(raw: Bytes, count: usize, base_ts: i64) -> Result<Vec<Record>, SegmentError> {
    if count > raw.len() / MIN_RECORD_LEN {
        return Err(SegmentError::Malformed(format!("{count} records cannot fit")));
    }
    let mut r = Reader::new(raw);
    let mut records = Vec::with_capacity(count);
    for i in 0..count {
        let mut rec = Reader::new(r.len_prefixed()?);
        let _attributes = rec.u8()?;
        let timestamp_ms = base_ts.wrapping_add(rec.varint()?);
        let offset_delta = rec.varint()?;
        if offset_delta != i as i64 {
            return Err(SegmentError::Malformed(format!("record {i} has offset delta {offset_delta}")));
        }
        let key = match rec.varint()? {
            -1 => None,
            n => Some(rec.bytes(to_len(n)?)?),
        };
        let value = match rec.varint()? {
            -1 => None,
            n => Some(rec.bytes(to_len(n)?)?),
        };
        let header_count = to_len(rec.varint()?)?;
        if header_count > rec.remaining() {
            return Err(SegmentError::Malformed("header count exceeds record".into()));
        }
        let mut headers = Vec::with_capacity(header_count);
        for _ in 0..header_count {
            let key = rec.len_prefixed()?;
            let key = String::from_utf8(key.to_vec())
                .map_err(|_| SegmentError::Malformed("header key is not UTF-8".into()))?;
            headers.push(Header { key, value: rec.len_prefixed()? });
        }
        if rec.remaining() != 0 {
            return Err(SegmentError::Malformed(format!("record {i} has trailing bytes")));
        }
        records.push(Record { timestamp_ms, key, value, headers });
    }
    if r.remaining() != 0 {
        return Err(SegmentError::Malformed("bytes after the last record".into()));
    }
    Ok(records)
}

fn to_len(n: i64) -> Result<usize, SegmentError> {
    usize::try_from(n).map_err(|_| SegmentError::Malformed(format!("negative length {n}")))
}

/// Reads and checks the directory of a whole segment object.
pub fn read_directory(object: &Bytes) -> Result<Vec<ChunkEntry>, SegmentError> {
    if object.len() < HEADER_LEN + TRAILER_LEN || &object[..MAGIC.len()] != MAGIC {
        return Err(SegmentError::BadMagic);
    }
    if object[MAGIC.len()] != VERSION {
        return Err(SegmentError::UnsupportedVersion(object[MAGIC.len()]));
    }
    let trailer_at = object.len() - TRAILER_LEN;
    let mut t = Reader::new(object.slice(trailer_at..));
    let dir_len = t.u32()? as usize;
    let dir_crc = t.u32()?;
    if &t.bytes(TRAILER_MAGIC.len())?[..] != TRAILER_MAGIC {
        return Err(SegmentError::BadMagic);
    }
    if dir_len > trailer_at - HEADER_LEN {
        return Err(SegmentError::Malformed(format!("directory of {dir_len} bytes")));
    }
    let dir_at = trailer_at - dir_len;
    let dir = object.slice(dir_at..trailer_at);
    let computed = crc32c::crc32c(&dir);
    if computed != dir_crc {
        return Err(SegmentError::ChecksumMismatch { stored: dir_crc, computed });
    }
    let mut d = Reader::new(dir);
    let count = d.u32()? as usize;
    if count > d.remaining() / 38 {
        return Err(SegmentError::Malformed(format!("{count} chunks cannot fit")));
    }
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let topic_len = usize::from(d.u16()?);
        let topic = String::from_utf8(d.bytes(topic_len)?.to_vec())
            .map_err(|_| SegmentError::Malformed("topic is not UTF-8".into()))?;
        let entry = ChunkEntry {
            topic,
            partition: d.u32()?,
            position: d.u64()?,
            len: d.u32()?,
            record_count: d.u32()?,
            min_timestamp_ms: d.i64()?,
            max_timestamp_ms: d.i64()?,
        };
        let end = entry.position.checked_add(u64::from(entry.len));
        if entry.position < HEADER_LEN as u64 || end.is_none_or(|end| end > dir_at as u64) {
            return Err(SegmentError::Malformed(format!(
                "chunk at {}+{} outside the data area",
                entry.position, entry.len
            )));
        }
        entries.push(entry);
    }
    if d.remaining() != 0 {
        return Err(SegmentError::Malformed("bytes after the directory".into()));
    }
    Ok(entries)
}

/// Decodes a whole segment: its directory and every chunk.
pub fn decode_segment(object: &Bytes) -> Result<Vec<(ChunkEntry, Vec<Record>)>, SegmentError> {
    read_directory(object)?
        .into_iter()
        .map(|entry| {
            let start = entry.position as usize;
            let chunk = object.slice(start..start + entry.len as usize);
            let records = decode_chunk(chunk)?;
            if records.len() != entry.record_count as usize {
                return Err(SegmentError::Malformed("record count differs from directory".into()));
            }
            Ok((entry, records))
        })
        .collect()
}

mod fetch;
pub use fetch::{ChunkLocation, ChunkReadError, decode_read_chunk, read_chunk, storage_error};

#[cfg(test)]
mod tests;
