//! The Kafka listener spoken to byte by byte: error answers for what it does
//! not serve, a half-sent frame, a drain on shutdown, idempotent producers'
//! sequence checks. The frames are encoded by hand or with `kafka-protocol`.

use std::time::Duration;

use anyhow::{Context, ensure};
use shale_tests::kafka::{answer, client, frame, kafka_address, start};
use shale_tests::{Backend, Shale};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_requests_get_kafka_error_codes_on_a_connection_that_stays_open() -> anyhow::Result<()> {
    eprintln!("local disk only: this is about the protocol, not the store");
    let dir = tempfile::tempdir()?;
    let (_shale, kafka) = start(dir.path(), &Backend::Local, "kafka-raw").await?;
    let mut stream = tokio::net::TcpStream::connect(&kafka).await?;
    // ApiVersions at a version from the future: v0 answer, UNSUPPORTED_VERSION (35), and the list
    stream.write_all(&frame(18, 99, 1, &[])).await?;
    let a = answer(&mut stream).await?;
    ensure!(a[0..4] == 1i32.to_be_bytes(), "correlation id {:?}", &a[0..4]);
    ensure!(a[4..6] == 35i16.to_be_bytes(), "error code {:?}", &a[4..6]);
    let keys = i32::from_be_bytes(a[6..10].try_into()?);
    ensure!(keys >= 15, "only {keys} APIs listed");
    // DescribeAcls (29), not served: an answer carrying UNSUPPORTED_VERSION, not a hang-up
    let describe_acls_v1 = [1u8, 0xff, 0xff, 1, 0xff, 0xff, 0xff, 0xff, 1, 1];
    stream.write_all(&frame(29, 1, 2, &describe_acls_v1)).await?;
    let a = answer(&mut stream).await?;
    ensure!(a[0..4] == 2i32.to_be_bytes(), "correlation id {:?}", &a[0..4]);
    // throttle_time_ms, then error_code
    ensure!(a[8..10] == 35i16.to_be_bytes(), "DescribeAcls answer {a:?}");
    // Metadata v1 for a topic that does not exist: UNKNOWN_TOPIC_OR_PARTITION (3)
    let mut metadata = 1i32.to_be_bytes().to_vec();
    metadata.extend_from_slice(&7i16.to_be_bytes());
    metadata.extend_from_slice(b"missing");
    stream.write_all(&frame(3, 1, 3, &metadata)).await?;
    let a = answer(&mut stream).await?;
    ensure!(a[0..4] == 3i32.to_be_bytes(), "correlation id");
    let needle = [&3i16.to_be_bytes()[..], &7i16.to_be_bytes()[..], b"missing"].concat();
    ensure!(
        a.windows(needle.len()).any(|w| w == needle.as_slice()),
        "no UNKNOWN_TOPIC_OR_PARTITION for missing: {a:?}"
    );
    // still open: ApiVersions v0 answers with no error
    stream.write_all(&frame(18, 0, 4, &[])).await?;
    let a = answer(&mut stream).await?;
    ensure!(
        a[0..4] == 4i32.to_be_bytes() && a[4..6] == [0, 0],
        "ApiVersions v0 after the errors: {:?}",
        &a[..6]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_frame_is_closed_and_idle_connections_do_not_stop_producers() -> anyhow::Result<()> {
    eprintln!("local disk only: this is about connections, not the store");
    rlimit::increase_nofile_limit(4096)?;
    let dir = tempfile::tempdir()?;
    let shale = Shale::start(
        dir.path(),
        &Backend::Local,
        "kafka-hostage",
        &["--kafka-listen=127.0.0.1:0", "--body-timeout-ms=1000"],
    )
    .await?;
    let kafka = kafka_address(&dir.path().join("shale.log")).await?;
    // two bytes of a frame's length, then nothing: closed once the frame timeout passes
    let mut half = tokio::net::TcpStream::connect(&kafka).await?;
    half.write_all(&[0, 0]).await?;
    let started = std::time::Instant::now();
    let mut rest = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(10), half.read(&mut rest)).await;
    ensure!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "a half-sent frame kept its connection: {read:?}");
    ensure!(started.elapsed() < Duration::from_secs(5), "closed only after {:?}", started.elapsed());
    // 1 000 idle connections, then a producer is still served
    let mut idle = Vec::with_capacity(1000);
    for _ in 0..1000 {
        idle.push(tokio::net::TcpStream::connect(&kafka).await?);
    }
    let kcat = client("SHALE_KCAT")?;
    let http = shale.client();
    http.create_topic("busy", 1).await?;
    let mut produce = Command::new(&kcat);
    produce.args(["-b", &kafka, "-P", "-t", "busy", "-K:"]).stdin(std::process::Stdio::piped());
    let mut child = produce.kill_on_drop(true).spawn()?;
    child.stdin.take().context("stdin")?.write_all(b"k:v1\nk:v2\n").await?;
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait()).await??;
    ensure!(status.success(), "kcat -P failed beside 1000 idle connections: {status}");
    let (status, fetched) = http.fetch("busy", 0, "offset=0").await?;
    ensure!(status == 200 && fetched["records"].as_array().map(Vec::len) == Some(2), "fetched {fetched}");
    drop(idle);
    Ok(())
}

/// Fetch v4 of one partition from `offset`, long-polling up to `max_wait_ms`.
fn fetch_v4(topic: &str, offset: i64, max_wait_ms: i32) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(-1i32).to_be_bytes()); // replica id
    body.extend_from_slice(&max_wait_ms.to_be_bytes());
    body.extend_from_slice(&1i32.to_be_bytes()); // min bytes
    body.extend_from_slice(&(1i32 << 20).to_be_bytes()); // max bytes
    body.push(0); // isolation level
    body.extend_from_slice(&1i32.to_be_bytes()); // one topic
    body.extend_from_slice(&i16::try_from(topic.len()).unwrap_or(i16::MAX).to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(&1i32.to_be_bytes()); // one partition
    body.extend_from_slice(&0i32.to_be_bytes());
    body.extend_from_slice(&offset.to_be_bytes());
    body.extend_from_slice(&(1i32 << 20).to_be_bytes());
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_request_in_flight_is_answered_when_the_gateway_drains() -> anyhow::Result<()> {
    eprintln!("local disk only: this is about shutdown, not the store");
    let dir = tempfile::tempdir()?;
    let (mut shale, kafka) = start(dir.path(), &Backend::Local, "kafka-drain").await?;
    shale.client().create_topic("quiet", 1).await?;
    let mut stream = tokio::net::TcpStream::connect(&kafka).await?;
    // a long-poll on an empty partition is in flight when SIGTERM comes
    stream.write_all(&frame(1, 4, 7, &fetch_v4("quiet", 0, 3000))).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    shale.signal("TERM")?;
    let a = answer(&mut stream).await.context("the fetch in flight was not answered on shutdown")?;
    ensure!(a[0..4] == 7i32.to_be_bytes(), "correlation id {:?}", &a[0..4]);
    // then the connection closes, and the process exits
    let mut rest = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut rest)).await;
    ensure!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "the drained connection stayed open: {read:?}");
    ensure!(shale.wait_exit(Duration::from_secs(15)).await?, "shale did not exit after draining");
    ensure!(
        tokio::net::TcpStream::connect(&kafka).await.is_err(),
        "the listener still accepts after shutdown"
    );
    Ok(())
}

/// Produce v7 of one batch of `count` records from an idempotent producer;
/// answers the partition's error code and base offset.
async fn produce_idempotent(
    stream: &mut tokio::net::TcpStream,
    correlation: i32,
    (producer, epoch, sequence): (i64, i16, i32),
    count: usize,
) -> anyhow::Result<(i16, i64)> {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: producer,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: sequence + i as i32,
            timestamp: 1_700_000_000_000,
            key: None,
            value: Some(bytes::Bytes::from(format!("{sequence}.{i}"))),
            headers: Default::default(),
        })
        .collect();
    let mut batch = bytes::BytesMut::new();
    let options = RecordEncodeOptions { version: 2, compression: Compression::None };
    RecordBatchEncoder::encode(&mut batch, records.iter(), &options)?;
    let partition = PartitionProduceData::default().with_index(0).with_records(Some(batch.freeze()));
    let topic = TopicProduceData::default()
        .with_name(TopicName(StrBytes::from_static_str("seq")))
        .with_partition_data(vec![partition]);
    let request =
        ProduceRequest::default().with_acks(-1).with_timeout_ms(10_000).with_topic_data(vec![topic]);
    let mut body = bytes::BytesMut::new();
    request.encode(&mut body, 7)?;
    stream.write_all(&frame(0, 7, correlation, &body)).await?;
    let a = answer(stream).await?;
    ensure!(a[0..4] == correlation.to_be_bytes(), "correlation id {:?}", &a[0..4]);
    let mut rest = bytes::Bytes::copy_from_slice(&a[4..]);
    let response = ProduceResponse::decode(&mut rest, 7)?;
    let p = response
        .responses
        .first()
        .and_then(|t| t.partition_responses.first())
        .context("no partition in the produce answer")?;
    Ok((p.error_code, p.base_offset))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_producers_sequences_are_checked_as_kafka_checks_them() -> anyhow::Result<()> {
    eprintln!("local disk only: sequence checks are the controller's, whatever the store");
    let dir = tempfile::tempdir()?;
    let (shale, kafka) = start(dir.path(), &Backend::Local, "kafka-seq").await?;
    shale.client().create_topic("seq", 1).await?;
    let mut s = tokio::net::TcpStream::connect(&kafka).await?;
    const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
    const INVALID_PRODUCER_EPOCH: i16 = 47;
    ensure!(produce_idempotent(&mut s, 1, (1000, 0, 0), 2).await? == (0, 0), "the first batch");
    // a gap: sequence 2 is next, 5 is refused and nothing is written
    let gap = produce_idempotent(&mut s, 2, (1000, 0, 5), 1).await?;
    ensure!(gap.0 == OUT_OF_ORDER_SEQUENCE_NUMBER, "a sequence gap answered {gap:?}");
    ensure!(produce_idempotent(&mut s, 3, (1000, 0, 2), 1).await? == (0, 2), "the next batch");
    // a retry of the first batch: its original offset, nothing written
    ensure!(produce_idempotent(&mut s, 4, (1000, 0, 0), 2).await? == (0, 0), "a retried batch");
    // a new epoch starts at sequence 0; the old epoch is fenced
    let restart = produce_idempotent(&mut s, 5, (1000, 1, 3), 1).await?;
    ensure!(restart.0 == OUT_OF_ORDER_SEQUENCE_NUMBER, "a new epoch not at 0 answered {restart:?}");
    ensure!(produce_idempotent(&mut s, 6, (1000, 1, 0), 1).await? == (0, 3), "the new epoch's first batch");
    let zombie = produce_idempotent(&mut s, 7, (1000, 0, 3), 1).await?;
    ensure!(zombie.0 == INVALID_PRODUCER_EPOCH, "the old epoch answered {zombie:?}");
    // HTTP sees exactly the four records appended, in order
    let (status, fetched) = shale.client().fetch("seq", 0, "offset=0").await?;
    let values: Vec<String> = fetched["records"]
        .as_array()
        .context("records")?
        .iter()
        .filter_map(|r| r["value"].as_str().map(str::to_owned))
        .collect();
    ensure!(status == 200 && values == ["0.0", "0.1", "2.0", "0.0"], "fetched {values:?}");
    Ok(())
}
