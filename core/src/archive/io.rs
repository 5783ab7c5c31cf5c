//! Archive files in the object store: a reader for Parquet's async
//! decoder, and a writer that encodes on the blocking pool and uploads what
//! it encoded as it goes, so neither holds a whole file in memory.

use std::io::Write;
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};

use arrow_array::RecordBatch;
use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::errors::ParquetError;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::WriterProperties;
use tokio::io::AsyncWriteExt;

use super::{ArchiveError, schema};

/// An archive file in the object store, for Parquet's async reader: ranged
/// GETs through the store (retries and metrics included), and the footer
/// read with one GET of the file's tail when it fits the prefetch hint.
/// The page index is loaded only when asked for ([`ArchiveFile::with_page_index`]).
#[derive(Debug, Clone)]
pub struct ArchiveFile {
    store: Arc<dyn ObjectStore>,
    path: Path,
    len: u64,
    page_index: PageIndexPolicy,
}

/// Bytes read from a file's end at once for its footer.
const FOOTER_PREFETCH: usize = 64 << 10;

impl ArchiveFile {
    pub fn new(store: Arc<dyn ObjectStore>, path: Path, len: u64) -> Self {
        Self { store, path, len, page_index: PageIndexPolicy::Skip }
    }

    /// Loads the page index with the footer, when the file has one.
    pub fn with_page_index(mut self) -> Self {
        self.page_index = PageIndexPolicy::Optional;
        self
    }
}

fn store_error(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for ArchiveFile {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move { self.store.get_range(&self.path, range).await.map_err(store_error) }.boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move { self.store.get_ranges(&self.path, &ranges).await.map_err(store_error) }.boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let len = self.len;
            let metadata = ParquetMetaDataReader::new()
                .with_page_index_policy(self.page_index)
                .with_prefetch_hint(Some(FOOTER_PREFETCH))
                .load_and_finish(self, len)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

/// The bytes of one row group (or of the pages of it a read needs), read
/// beforehand, for Parquet's async reader: decoding then waits on no I/O,
/// so it can run on the blocking pool without holding a thread through a
/// GET.
#[derive(Debug, Clone)]
pub struct PrefetchedRowGroup {
    /// Byte ranges of the file read, by their start.
    parts: Vec<(u64, Bytes)>,
    metadata: Arc<ParquetMetaData>,
}

impl PrefetchedRowGroup {
    /// The byte ranges of the file that rows `skip..` of row group `index`
    /// need: with the page index, each column's dictionary page and the data
    /// pages holding those rows (as Parquet's reader asks for them); without
    /// it, the whole column chunks. None when the footer is inconsistent.
    pub fn ranges(metadata: &ParquetMetaData, index: usize, skip: u64) -> Option<Vec<Range<u64>>> {
        let group = metadata.row_groups().get(index)?;
        let rows = u64::try_from(group.num_rows()).ok()?;
        let page_index = metadata.page_index_for_row_group(index);
        let mut ranges = Vec::new();
        for (c, column) in group.columns().iter().enumerate() {
            let start = column.dictionary_page_offset().unwrap_or(column.data_page_offset());
            let (start, len) = (u64::try_from(start).ok()?, u64::try_from(column.compressed_size()).ok()?);
            let locations = page_index.offset_index(c).map(|o| o.page_locations().as_slice());
            let Some(locations) = locations.filter(|l| !l.is_empty() && skip > 0) else {
                ranges.push(start..start.checked_add(len)?);
                continue;
            };
            let first = u64::try_from(locations[0].offset).ok()?;
            if first > start {
                ranges.push(start..first); // the dictionary page
            }
            for (i, page) in locations.iter().enumerate() {
                let next =
                    locations.get(i + 1).map_or(Some(rows), |n| u64::try_from(n.first_row_index).ok())?;
                if next > skip {
                    let at = u64::try_from(page.offset).ok()?;
                    ranges.push(at..at.checked_add(u64::try_from(page.compressed_page_size).ok()?)?);
                }
            }
        }
        ranges.sort_by_key(|r| r.start);
        Some(ranges)
    }

    /// The first row of the page of `column` holding row `row`: where a read
    /// of rows from `row` on can start (0 without a page index).
    pub fn page_start(metadata: &ParquetMetaData, index: usize, column: usize, row: u64) -> u64 {
        let page_index = metadata.page_index_for_row_group(index);
        let locations = page_index.offset_index(column).map(|o| o.page_locations().as_slice()).unwrap_or(&[]);
        locations
            .iter()
            .filter_map(|p| u64::try_from(p.first_row_index).ok())
            .take_while(|first| *first <= row)
            .last()
            .unwrap_or(0)
    }

    pub fn new(parts: Vec<(u64, Bytes)>, metadata: Arc<ParquetMetaData>) -> Self {
        Self { parts, metadata }
    }
}

impl AsyncFileReader for PrefetchedRowGroup {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        let part = self.parts.iter().find_map(|(start, bytes)| {
            let from = usize::try_from(range.start.checked_sub(*start)?).ok()?;
            let to = usize::try_from(range.end.checked_sub(*start)?).ok()?;
            (from <= to && to <= bytes.len()).then(|| bytes.slice(from..to))
        });
        let bytes =
            part.ok_or_else(|| ParquetError::General(format!("bytes {range:?} are outside what was read")));
        std::future::ready(bytes).boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        std::future::ready(Ok(self.metadata.clone())).boxed()
    }
}

/// Bytes of encoded file an [`ArchiveWriter`] gathers before uploading them:
/// a file smaller than this is one PUT, a larger one a multipart upload in
/// parts of this size (S3's smallest), at most [`PARTS_IN_FLIGHT`]
/// uploading while the next fills. So a writer holds at most three parts
/// (15 MiB) whatever the file's size and however slowly the store answers;
/// with object_store's default of eight in flight, four writers behind a
/// slow store could hold 36 parts. One in flight stalled the encoder on
/// every upload (archiving 1 GiB over 4 partitions: median 48.5 MiB/s
/// against 53–56). With 16 MiB parts the compactor's peak RSS reached
/// 308 MiB archiving 1 GiB of four partitions (files of about 96 MiB),
/// over its 256 MiB bound (docs/BENCHMARKS.md, eleventh session).
const UPLOAD_PART: usize = 5 << 20;
const PARTS_IN_FLIGHT: usize = 2;

/// Encoded bytes the Parquet encoder has handed over, not yet uploaded.
#[derive(Debug, Clone, Default)]
struct Encoded(Arc<Mutex<Vec<u8>>>);

impl Encoded {
    /// What was encoded so far; the next bytes go to a buffer sized for a
    /// row group, so it is not grown (and copied) by doubling.
    fn take(&self) -> Vec<u8> {
        let mut encoded = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if encoded.is_empty() {
            return Vec::new();
        }
        std::mem::replace(
            &mut *encoded,
            Vec::with_capacity(super::ROW_GROUP_BYTES + (super::ROW_GROUP_BYTES >> 2)),
        )
    }
}

impl Write for Encoded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes one archive file: batches are encoded on the blocking pool (the
/// encoder closes a row group at [`super::ROW_GROUP_BYTES`]), and whatever
/// it has encoded is handed to the upload, so memory stays at about a row
/// group plus an upload part whatever the file's size.
pub struct ArchiveWriter {
    encoder: Option<ArrowWriter<Encoded>>,
    encoded: Encoded,
    upload: BufWriter,
    part_bytes: usize,
    len: u64,
}

impl std::fmt::Debug for ArchiveWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveWriter").field("len", &self.len).finish_non_exhaustive()
    }
}

fn join_error(e: tokio::task::JoinError) -> ArchiveError {
    ArchiveError::Schema(format!("the encoder task failed: {e}"))
}

impl ArchiveWriter {
    pub fn new(
        store: Arc<dyn ObjectStore>,
        path: Path,
        props: WriterProperties,
    ) -> Result<Self, ArchiveError> {
        Self::with_part_bytes(store, path, props, UPLOAD_PART)
    }

    fn with_part_bytes(
        store: Arc<dyn ObjectStore>,
        path: Path,
        props: WriterProperties,
        part_bytes: usize,
    ) -> Result<Self, ArchiveError> {
        let encoded = Encoded::default();
        let encoder = ArrowWriter::try_new(encoded.clone(), schema(), Some(props))?;
        let upload = BufWriter::with_capacity(store, path, part_bytes).with_max_concurrency(PARTS_IN_FLIGHT);
        Ok(Self { encoder: Some(encoder), encoded, upload, part_bytes, len: 0 })
    }

    pub async fn write(&mut self, batch: RecordBatch) -> Result<(), ArchiveError> {
        let Some(mut encoder) = self.encoder.take() else {
            return Err(ArchiveError::Schema("write after a failed write".into()));
        };
        let encoder = tokio::task::spawn_blocking(move || encoder.write(&batch).map(|()| encoder))
            .await
            .map_err(join_error)??;
        self.encoder = Some(encoder);
        self.upload_encoded().await
    }

    async fn upload_encoded(&mut self) -> Result<(), ArchiveError> {
        let bytes = self.encoded.take();
        if bytes.is_empty() {
            return Ok(());
        }
        self.len += bytes.len() as u64;
        // handed over, not copied into the upload's own buffer, at most a
        // part per put: each put waits while PARTS_IN_FLIGHT parts upload,
        // so a row group larger than a part cannot start more at once
        let mut bytes = Bytes::from(bytes);
        while !bytes.is_empty() {
            let part = bytes.split_to(bytes.len().min(self.part_bytes));
            self.upload.put(part).await.map_err(|e| ArchiveError::Upload(e.to_string()))?;
        }
        Ok(())
    }

    /// Writes the footer and completes the upload; answers the file's size.
    pub async fn finish(mut self) -> Result<u64, ArchiveError> {
        let Some(encoder) = self.encoder.take() else {
            return Err(ArchiveError::Schema("finish after a failed write".into()));
        };
        tokio::task::spawn_blocking(move || encoder.close()).await.map_err(join_error)??;
        self.upload_encoded().await?;
        self.upload.shutdown().await.map_err(|e| ArchiveError::Upload(e.to_string()))?;
        Ok(self.len)
    }

    /// Gives up the file: a multipart upload under way is aborted.
    pub async fn abort(mut self) {
        if let Err(e) = self.upload.abort().await {
            tracing::warn!(error = %e, "cannot abort an archive upload");
        }
    }
}

#[cfg(test)]
mod tests;
