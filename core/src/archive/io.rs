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
/// Readers here take whole row groups, so the page index (written for query
/// engines) is not loaded.
#[derive(Debug, Clone)]
pub struct ArchiveFile {
    store: Arc<dyn ObjectStore>,
    path: Path,
    len: u64,
}

/// Bytes read from a file's end at once for its footer.
const FOOTER_PREFETCH: usize = 64 << 10;

impl ArchiveFile {
    pub fn new(store: Arc<dyn ObjectStore>, path: Path, len: u64) -> Self {
        Self { store, path, len }
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
                .with_page_index_policy(PageIndexPolicy::Skip)
                .with_prefetch_hint(Some(FOOTER_PREFETCH))
                .load_and_finish(self, len)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

/// The bytes of one row group, read beforehand, for Parquet's async reader:
/// decoding then waits on no I/O, so it can run on the blocking pool
/// without holding a thread through a GET.
#[derive(Debug, Clone)]
pub struct PrefetchedRowGroup {
    start: u64,
    bytes: Bytes,
    metadata: Arc<ParquetMetaData>,
}

impl PrefetchedRowGroup {
    /// The byte range of the file holding row group `index`'s column chunks.
    pub fn range(metadata: &ParquetMetaData, index: usize) -> Option<Range<u64>> {
        let group = metadata.row_groups().get(index)?;
        let mut range: Option<Range<u64>> = None;
        for column in group.columns() {
            let start = column.dictionary_page_offset().unwrap_or(column.data_page_offset());
            let (start, len) = (u64::try_from(start).ok()?, u64::try_from(column.compressed_size()).ok()?);
            let end = start.checked_add(len)?;
            range = Some(range.map_or(start..end, |r| r.start.min(start)..r.end.max(end)));
        }
        range
    }

    pub fn new(start: u64, bytes: Bytes, metadata: Arc<ParquetMetaData>) -> Self {
        Self { start, bytes, metadata }
    }
}

impl AsyncFileReader for PrefetchedRowGroup {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        let from = range.start.checked_sub(self.start).and_then(|f| usize::try_from(f).ok());
        let to = range.end.checked_sub(self.start).and_then(|t| usize::try_from(t).ok());
        let bytes = match (from, to) {
            (Some(from), Some(to)) if from <= to && to <= self.bytes.len() => Ok(self.bytes.slice(from..to)),
            _ => Err(ParquetError::General(format!(
                "bytes {range:?} are outside the row group read ({}..{})",
                self.start,
                self.start + self.bytes.len() as u64
            ))),
        };
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
/// parts of this size.
const UPLOAD_PART: usize = 16 << 20;

/// Encoded bytes the Parquet encoder has handed over, not yet uploaded.
#[derive(Debug, Clone, Default)]
struct Encoded(Arc<Mutex<Vec<u8>>>);

impl Encoded {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
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
        let encoded = Encoded::default();
        let encoder = ArrowWriter::try_new(encoded.clone(), schema(), Some(props))?;
        let upload = BufWriter::with_capacity(store, path, UPLOAD_PART);
        Ok(Self { encoder: Some(encoder), encoded, upload, len: 0 })
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
        self.upload.write_all(&bytes).await.map_err(|e| ArchiveError::Upload(e.to_string()))
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
