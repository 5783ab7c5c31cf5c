use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, UploadPart,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use super::*;
use crate::TopicName;
use crate::archive::{BatchBuilder, decode_batch, writer_properties};
use crate::record::Record;

/// Upload parts in flight now, and the most seen at once.
#[derive(Debug, Default)]
struct Parts {
    now: AtomicUsize,
    most: AtomicUsize,
    total: AtomicUsize,
}

/// An in-memory store whose multipart parts each take a while, as a slow
/// store's do, counting how many upload at once.
#[derive(Debug)]
struct SlowParts {
    inner: InMemory,
    parts: Arc<Parts>,
}

impl std::fmt::Display for SlowParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SlowParts")
    }
}

#[derive(Debug)]
struct SlowUpload {
    inner: Box<dyn MultipartUpload>,
    parts: Arc<Parts>,
}

#[async_trait::async_trait]
impl MultipartUpload for SlowUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let parts = self.parts.clone();
        let upload = self.inner.put_part(data);
        Box::pin(async move {
            let now = parts.now.fetch_add(1, Ordering::SeqCst) + 1;
            parts.most.fetch_max(now, Ordering::SeqCst);
            parts.total.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(5)).await;
            let done = upload.await;
            parts.now.fetch_sub(1, Ordering::SeqCst);
            done
        })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        self.inner.complete().await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
    }
}

#[async_trait::async_trait]
impl ObjectStore for SlowParts {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(SlowUpload { inner, parts: self.parts.clone() }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[tokio::test]
async fn a_large_file_uploads_two_parts_at_most_at_once_and_reads_back_whole() {
    let parts = Arc::new(Parts::default());
    let store = Arc::new(SlowParts { inner: InMemory::new(), parts: parts.clone() });
    let topic = TopicName::new("orders".to_owned()).expect("valid name");
    let path = Path::from("archive/topic=orders/partition=0/big.parquet");
    let part_bytes = 64 << 10;
    let mut writer = ArchiveWriter::with_part_bytes(
        store.clone(),
        path.clone(),
        writer_properties(&topic, 1, 0),
        part_bytes,
    )
    .expect("writer");
    // incompressible values, so the file is about as large as they are
    let mut rng = StdRng::seed_from_u64(7);
    let records: Vec<Record> = (0..1500)
        .map(|i| {
            let mut value = vec![0u8; 1024];
            rng.fill_bytes(&mut value);
            Record { timestamp_ms: i, key: None, value: Some(Bytes::from(value)), headers: Vec::new() }
        })
        .collect();
    for (n, chunk) in records.chunks(100).enumerate() {
        let mut batch = BatchBuilder::default();
        for (i, record) in chunk.iter().enumerate() {
            batch.push((n * 100 + i) as u64, record);
        }
        writer.write(batch.finish().expect("batch")).await.expect("write");
    }
    let len = writer.finish().await.expect("finish");

    assert!(len > 1_500_000, "the file holds the values: {len} bytes");
    let total = parts.total.load(Ordering::SeqCst);
    assert!(total as u64 >= len / part_bytes as u64, "{total} parts for {len} bytes");
    let most = parts.most.load(Ordering::SeqCst);
    assert!((1..=PARTS_IN_FLIGHT).contains(&most), "{most} parts uploading at once");
    let file = store.get(&path).await.expect("stored").bytes().await.expect("body");
    assert_eq!(file.len() as u64, len);
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).expect("footer").build().expect("reader");
    let back: Vec<(u64, Record)> =
        reader.flat_map(|b| decode_batch(&b.expect("batch")).expect("decodes")).collect();
    assert_eq!(back.len(), records.len());
    for (i, ((offset, got), want)) in back.iter().zip(&records).enumerate() {
        assert_eq!((*offset, got), (i as u64, want));
    }
}
