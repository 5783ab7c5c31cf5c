//! The archive format: a partition's history as Parquet files that SQL
//! engines read directly, and that the gateway serves fetches from.
//!
//! ```text
//! archive/topic={name}/partition={p}/{first:020}-{last:020}.parquet
//! ```
//!
//! Flat top-level columns, in this order: `offset` INT64 (the sorting
//! column), `timestamp` TIMESTAMP(MICROS, UTC), `key` BINARY (null: no key),
//! `value` BINARY (null: a tombstone), `headers` LIST<STRUCT<key: UTF8,
//! value: BINARY>> (order and duplicates kept). The footer's key-value
//! metadata names the topic, its id (the incarnation) and the partition.
//! Rows are offsets in order; a file holds every offset from first to last,
//! except on a compacted topic, whose cleaned files hold the rows that
//! survived (the log is sparse) under a new name (see [`cleaned_key`]).

use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::{
    Array, ArrayRef, BinaryArray, Int64Array, ListArray, RecordBatch, StringArray, StructArray,
    TimestampMicrosecondArray,
};
use arrow_buffer::OffsetBuffer;
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;
use object_store::path::Path;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::{Header, Offset, PartitionId, Record, TopicName};

/// Where a topic's archive starts in the bucket.
pub const ARCHIVE_PREFIX: &str = "archive";
/// Footer metadata keys.
pub const META_TOPIC: &str = "shale.topic";
pub const META_TOPIC_ID: &str = "shale.topic_id";
pub const META_PARTITION: &str = "shale.partition";

/// Rows per data page at most: the page index then lets an offset-range
/// query read about this many rows around the range.
const PAGE_ROWS: usize = 1024;
/// A data page is closed past this many bytes, and rows are written in
/// mini-batches of [`WRITE_BATCH_ROWS`] so that it closes close to it. Pages
/// (and decode batches, see [`decode_batch_rows`]) stay under glibc's mmap
/// threshold (128 KiB, pinned by the `shale` binary): a reader's page and
/// value buffers then come from the heap, not from fresh mapped pages that
/// each fault, zero and unmap (half of all CPU in a catch-up from the
/// archive, measured with 1 MiB pages).
const PAGE_BYTES: usize = 64 << 10;
const WRITE_BATCH_ROWS: usize = 64;
/// Bytes of rows a reader decodes at a time.
const DECODE_BATCH_BYTES: u64 = 96 << 10;
/// A row group is closed at this encoded size (or [`ROW_GROUP_ROWS`]); the
/// gateway reads and caches one row group at a time.
pub const ROW_GROUP_BYTES: usize = 2 << 20;
const ROW_GROUP_ROWS: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("not a Shale archive file: {0}")]
    Schema(String),
    #[error("uploading the file: {0}")]
    Upload(String),
}

/// The archive schema (see the module docs).
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("offset", DataType::Int64, false),
        Field::new("timestamp", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false),
        Field::new("key", DataType::Binary, true),
        Field::new("value", DataType::Binary, true),
        Field::new("headers", DataType::List(Arc::new(header_item())), false),
    ]))
}

fn header_fields() -> Fields {
    Fields::from(vec![Field::new("key", DataType::Utf8, false), Field::new("value", DataType::Binary, true)])
}

fn header_item() -> Field {
    Field::new("element", DataType::Struct(header_fields()), false)
}

/// The key of the file holding offsets `first..=last` of a partition.
/// Offsets are zero-padded, so lexical order is offset order.
pub fn archive_key(topic: &TopicName, partition: PartitionId, first: Offset, last: Offset) -> Path {
    Path::from(format!("{}/{first:020}-{last:020}.parquet", partition_prefix(topic, partition)))
}

/// The key of the `generation`th cleaned rewrite of a compacted topic's
/// file: the same span as the file it replaces, so another name
/// (`{first:020}-{last:020}.c{generation}.parquet`).
pub fn cleaned_key(
    topic: &TopicName,
    partition: PartitionId,
    first: Offset,
    last: Offset,
    generation: u32,
) -> Path {
    Path::from(format!("{}/{first:020}-{last:020}.c{generation}.parquet", partition_prefix(topic, partition)))
}

/// The generation of a file from its key: 0 unless it is a cleaned rewrite.
pub fn generation(key: &str) -> u32 {
    let stem = key.strip_suffix(".parquet").unwrap_or(key);
    let name = stem.rsplit('/').next().unwrap_or(stem);
    name.split_once(".c").and_then(|(_, n)| n.parse().ok()).unwrap_or(0)
}

/// The folder holding a partition's archive files.
pub fn partition_prefix(topic: &TopicName, partition: PartitionId) -> String {
    format!("{ARCHIVE_PREFIX}/topic={topic}/partition={partition}")
}

/// Writer settings: zstd, statistics and the page index on every column, a
/// bloom filter on `key`, `offset` declared the sorting column, and the
/// topic, its incarnation and the partition in the footer.
pub fn writer_properties(topic: &TopicName, topic_id: u64, partition: PartitionId) -> WriterProperties {
    let zstd = ZstdLevel::try_new(1).map_or(Compression::ZSTD(ZstdLevel::default()), Compression::ZSTD);
    WriterProperties::builder()
        .set_compression(zstd)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_data_page_row_count_limit(PAGE_ROWS)
        .set_data_page_size_limit(PAGE_BYTES)
        .set_write_batch_size(WRITE_BATCH_ROWS)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_max_row_group_bytes(Some(ROW_GROUP_BYTES))
        // values rarely repeat: a dictionary costs a hash per value and then falls back
        .set_column_dictionary_enabled(ColumnPath::from("value"), false)
        .set_column_dictionary_enabled(
            ColumnPath::new(vec!["headers".into(), "list".into(), "element".into(), "value".into()]),
            false,
        )
        .set_column_bloom_filter_enabled(ColumnPath::from("key"), true)
        // sized for a row group's keys, not parquet's default of a million
        .set_column_bloom_filter_max_ndv(ColumnPath::from("key"), ROW_GROUP_ROWS as u64)
        .set_column_bloom_filter_fpp(ColumnPath::from("key"), 0.01)
        .set_sorting_columns(Some(vec![SortingColumn {
            column_idx: 0,
            descending: false,
            nulls_first: false,
        }]))
        .set_key_value_metadata(Some(vec![
            KeyValue::new(META_TOPIC.to_owned(), topic.to_string()),
            KeyValue::new(META_TOPIC_ID.to_owned(), topic_id.to_string()),
            KeyValue::new(META_PARTITION.to_owned(), partition.to_string()),
        ]))
        .build()
}

/// Rows to decode at a time from a row group of `rows` rows holding
/// `bytes` uncompressed: about [`DECODE_BATCH_BYTES`] of them, 16 to 8192.
pub fn decode_batch_rows(rows: i64, bytes: i64) -> usize {
    let per_row = u64::try_from(bytes).unwrap_or(0) / u64::try_from(rows).unwrap_or(0).max(1);
    usize::try_from(DECODE_BATCH_BYTES / per_row.max(1)).unwrap_or(usize::MAX).clamp(16, 8192)
}

/// Collects records into one Arrow batch of the archive schema.
#[derive(Debug, Default)]
pub struct BatchBuilder {
    offsets: Int64Builder,
    timestamps: TimestampMicrosecondBuilder,
    keys: BinaryBuilder,
    values: BinaryBuilder,
    header_offsets: Vec<i32>,
    header_keys: StringBuilder,
    header_values: BinaryBuilder,
    rows: usize,
    bytes: usize,
}

impl BatchBuilder {
    pub fn push(&mut self, offset: Offset, record: &Record) {
        if self.header_offsets.is_empty() {
            self.header_offsets.push(0);
        }
        self.offsets.append_value(offset as i64);
        self.timestamps.append_value(record.timestamp_ms.saturating_mul(1000));
        self.keys.append_option(record.key.as_deref());
        self.values.append_option(record.value.as_deref());
        for h in &record.headers {
            self.header_keys.append_value(&h.key);
            self.header_values.append_value(&h.value);
        }
        let last = self.header_offsets.last().copied().unwrap_or(0);
        self.header_offsets.push(last + record.headers.len() as i32);
        self.rows += 1;
        self.bytes += record.size() + 32;
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// About how many bytes the rows pushed so far hold.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The batch of every row pushed since the last call.
    pub fn finish(&mut self) -> Result<RecordBatch, ArchiveError> {
        let header_offsets = std::mem::take(&mut self.header_offsets);
        let header_offsets = if header_offsets.is_empty() { vec![0] } else { header_offsets };
        let entries = StructArray::try_new(
            header_fields(),
            vec![Arc::new(self.header_keys.finish()), Arc::new(self.header_values.finish())],
            None,
        )?;
        let headers = ListArray::try_new(
            Arc::new(header_item()),
            OffsetBuffer::new(header_offsets.into()),
            Arc::new(entries),
            None,
        )?;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.offsets.finish()),
            Arc::new(self.timestamps.finish().with_timezone("UTC")),
            Arc::new(self.keys.finish()),
            Arc::new(self.values.finish()),
            Arc::new(headers),
        ];
        self.rows = 0;
        self.bytes = 0;
        Ok(RecordBatch::try_new(schema(), columns)?)
    }
}

/// A batch's column `name` as Arrow array type `T`, or a schema error.
pub fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T, ArchiveError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| ArchiveError::Schema(format!("column {name} is missing or of another type")))
}

/// A binary column's value bytes, to slice records' fields from.
fn owner(array: &BinaryArray) -> Bytes {
    Bytes::from_owner(array.values().clone())
}

/// The records of a batch read from an archive file, with their offsets.
pub fn decode_batch(batch: &RecordBatch) -> Result<Vec<(Offset, Record)>, ArchiveError> {
    let offsets = column::<Int64Array>(batch, "offset")?;
    let timestamps = column::<TimestampMicrosecondArray>(batch, "timestamp")?;
    let keys = column::<BinaryArray>(batch, "key")?;
    let values = column::<BinaryArray>(batch, "value")?;
    let headers = column::<ListArray>(batch, "headers")?;
    let entries = headers
        .values()
        .as_any()
        .downcast_ref::<StructArray>()
        .ok_or_else(|| ArchiveError::Schema("headers are not a list of structs".into()))?;
    let header_keys = entries
        .column_by_name("key")
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .ok_or_else(|| ArchiveError::Schema("header keys are not strings".into()))?;
    let header_values = entries
        .column_by_name("value")
        .and_then(|c| c.as_any().downcast_ref::<BinaryArray>())
        .ok_or_else(|| ArchiveError::Schema("header values are not binary".into()))?;
    // records share the batch's buffers instead of copying each value
    let (keys_owner, values_owner, header_values_owner) = (owner(keys), owner(values), owner(header_values));
    let bytes_at = |a: &BinaryArray, owner: &Bytes, i: usize| {
        let offsets = a.value_offsets();
        let range = offsets.get(i).zip(offsets.get(i + 1)).map(|(from, to)| *from as usize..*to as usize);
        match range {
            Some(r) if !a.is_null(i) && r.start <= r.end && r.end <= owner.len() => Some(owner.slice(r)),
            _ => None,
        }
    };
    let header_offsets = headers.value_offsets();
    let mut out = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let offset = u64::try_from(offsets.value(row))
            .map_err(|_| ArchiveError::Schema(format!("negative offset {}", offsets.value(row))))?;
        let bounds = header_offsets.get(row).zip(header_offsets.get(row + 1));
        let (from, to) = bounds.map_or((0, usize::MAX), |(a, b)| (*a as usize, *b as usize));
        if to > header_keys.len() || to > header_values.len() || from > to {
            return Err(ArchiveError::Schema(format!("row {row}: headers out of bounds")));
        }
        let headers = (from..to)
            .map(|h| Header {
                key: header_keys.value(h).to_owned(),
                value: bytes_at(header_values, &header_values_owner, h).unwrap_or_default(),
            })
            .collect();
        let record = Record {
            timestamp_ms: timestamps.value(row).div_euclid(1000),
            key: bytes_at(keys, &keys_owner, row),
            value: bytes_at(values, &values_owner, row),
            headers,
        };
        out.push((offset, record));
    }
    Ok(out)
}

mod io;
pub use io::{ArchiveFile, ArchiveWriter, PrefetchedRowGroup};

#[cfg(test)]
mod tests;
