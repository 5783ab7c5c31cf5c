//! `shale bench kafka`: produce over Kafka's protocol from librdkafka
//! (kcat processes) beside HTTP binary produce, against one `shale dev`.

use std::io::Write;
use std::time::Instant;

use anyhow::{Context, ensure};
use clap::Args;
use rand::Rng;

use super::load::Stats;
use super::report::Report;
use super::server::Server;
use super::{LoadBench, add_produce_figures, client, config, drive, high_watermarks, setup};

#[derive(Debug, Clone, Args)]
pub struct KafkaBench {
    #[command(flatten)]
    load: LoadBench,
    /// librdkafka's command-line client.
    #[arg(long, default_value = "kcat")]
    kcat: String,
    /// kcat processes producing at once (a connection each; each pipelines
    /// its requests). More than two share the box's cores with the server.
    #[arg(long, default_value_t = 2)]
    kcat_producers: usize,
}

impl KafkaBench {
    pub fn json(&self) -> Option<std::path::PathBuf> {
        self.load.json.clone()
    }
}

pub async fn run(args: &KafkaBench) -> anyhow::Result<Report> {
    let load = &args.load;
    ensure!(load.target.url.is_none(), "bench kafka starts its own shale dev: drop --url");
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let kafka = format!("127.0.0.1:{port}");
    let server = Server::start_with(&load.target, &[format!("--kafka-listen={kafka}")]).await?;
    let http = client(&server)?;

    // HTTP binary produce, closed loop, as `bench produce`
    let (_, producer) = setup(load, &server, &http, false).await?;
    let stats = Stats::new();
    let started = Instant::now();
    drive(load, producer, None, stats.clone()).await;
    let http_secs = started.elapsed().as_secs_f64();
    let http_bytes = stats.bytes.load(std::sync::atomic::Ordering::Relaxed) as f64;

    // the same volume over Kafka: one file of records per kcat process
    let (topic, _) = setup(load, &server, &http, false).await?;
    let dir = tempfile::tempdir()?;
    let per_process = (http_bytes as usize / args.kcat_producers.max(1)).max(load.record_bytes);
    let records_per_process = per_process / load.record_bytes;
    let mut rng = rand::rng();
    let mut files = Vec::new();
    for i in 0..args.kcat_producers {
        let path = dir.path().join(format!("records-{i}"));
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
        let mut line = vec![0u8; load.record_bytes];
        for _ in 0..records_per_process {
            for b in line.iter_mut() {
                *b = rng.random_range(b'a'..=b'z');
            }
            out.write_all(&line)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        files.push(path);
    }
    let started = Instant::now();
    let mut children = Vec::new();
    for path in &files {
        let child = tokio::process::Command::new(&args.kcat)
            .args(["-b", &kafka, "-P", "-t", &topic, "-l"])
            .arg(path)
            .args(["-X", "linger.ms=20", "-X", "batch.size=4000000", "-X", "message.max.bytes=8000000"])
            .args(["-X", "acks=all", "-X", "compression.codec=none"])
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", args.kcat))?;
        children.push(child);
    }
    for mut c in children {
        let status = c.wait().await?;
        ensure!(status.success(), "kcat exited with {status}");
    }
    let kafka_secs = started.elapsed().as_secs_f64();
    let written: u64 = high_watermarks(&server, &http, &topic).await?.iter().sum();
    let expected = (records_per_process * args.kcat_producers) as u64;
    ensure!(written == expected, "kcat produced {written} records, not {expected}");
    let kafka_bytes = (expected as usize * load.record_bytes) as f64;

    let mib = (1u64 << 20) as f64;
    let mut report = Report::new("kafka", config(load, &server, "kafka"));
    report.add("HTTP binary produce", http_bytes / mib / http_secs, "MiB/s");
    add_produce_figures(&mut report, &stats, http_secs);
    report.add("Kafka produce (kcat, librdkafka)", kafka_bytes / mib / kafka_secs, "MiB/s");
    report.add("Kafka records", expected as f64, "");
    report.add("Kafka / HTTP produce", (kafka_bytes / kafka_secs) / (http_bytes / http_secs), "x");
    Ok(report)
}
