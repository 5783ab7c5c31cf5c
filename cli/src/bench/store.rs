//! The raw ceiling of the object store, with no Shale in front: PUTs of whole
//! segments and ranged GETs of chunk-sized pieces, at Shale's concurrency.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use rand::Rng;
use serde_json::json;
use shale_core::store::StoreMetrics;

use super::load::Stats;
use super::report::Report;
use super::{StoreBench, progress};

/// Bytes between the serial numbers stamped into an object: every block of
/// a content-addressed store (Garage's are 1 MiB) gets one.
const STAMP_EVERY: usize = 64 << 10;

/// The template with `serial` stamped every `STAMP_EVERY` bytes, so that no
/// two PUTs carry the same bytes, as no two segments do. A store that keeps
/// each block once per hash (Garage) skips compressing, writing and syncing
/// a repeated one, and a repeated payload would measure only its hashing.
fn unique_object(template: &[u8], serial: u64) -> Bytes {
    let mut object = template.to_vec();
    let stamp = serial.to_le_bytes();
    for block in object.chunks_mut(STAMP_EVERY) {
        let n = block.len().min(stamp.len());
        block[..n].copy_from_slice(&stamp[..n]);
    }
    Bytes::from(object)
}

pub async fn run(args: &StoreBench) -> anyhow::Result<Report> {
    let dir = tempfile::tempdir()?;
    let default_url = format!("file://{}", dir.path().display());
    let store = args.store.open(&default_url, StoreMetrics::default())?;
    let object_bytes = args.object_mib << 20;
    let mut template = vec![0u8; object_bytes];
    rand::rng().fill(&mut template[..]);
    let template: Arc<[u8]> = template.into();
    let serial = Arc::new(AtomicU64::new(0));
    let duration = Duration::from_secs(args.duration_secs);

    let puts = Stats::new();
    let keys = Arc::new(std::sync::Mutex::new(Vec::new()));
    let until = Instant::now() + duration;
    let bar = progress("store PUT", duration, puts.clone());
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.put_concurrency)
        .map(|_| {
            let (store, stats, keys) = (store.clone(), puts.clone(), keys.clone());
            let (template, serial) = (template.clone(), serial.clone());
            tokio::spawn(async move {
                while Instant::now() < until {
                    let key = Path::from(format!("bench/{}.seg", ulid::Ulid::new()));
                    let data = unique_object(&template, serial.fetch_add(1, Ordering::Relaxed));
                    let t = Instant::now();
                    match store.put(&key, PutPayload::from(data.clone())).await {
                        Ok(_) => {
                            stats.record_latency(t.elapsed().as_micros() as u64);
                            stats.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                            keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(key);
                        }
                        Err(_) => {
                            stats.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await?;
    }
    let put_secs = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let keys: Vec<Path> = keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    anyhow::ensure!(!keys.is_empty(), "no PUT succeeded");

    let gets = Stats::new();
    let range = (args.range_kib << 10).min(object_bytes) as u64;
    let until = Instant::now() + duration;
    let bar = progress("store GET", duration, gets.clone());
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.get_concurrency)
        .map(|_| {
            let (store, stats, keys) = (store.clone(), gets.clone(), keys.clone());
            tokio::spawn(async move {
                while Instant::now() < until {
                    let (key, start) = {
                        let mut rng = rand::rng();
                        let key = keys[rng.random_range(0..keys.len())].clone();
                        (key, rng.random_range(0..=(object_bytes as u64 - range)))
                    };
                    let t = Instant::now();
                    match store.get_range(&key, start..start + range).await {
                        Ok(b) => {
                            stats.record_latency(t.elapsed().as_micros() as u64);
                            stats.bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
                        }
                        Err(_) => {
                            stats.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await?;
    }
    let get_secs = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    for key in &keys {
        let _ = store.delete(key).await;
    }

    let config = json!({
        "store": args.store.store.clone().unwrap_or(default_url),
        "object_mib": args.object_mib,
        "put_concurrency": args.put_concurrency,
        "range_kib": args.range_kib,
        "get_concurrency": args.get_concurrency,
        "duration_secs": args.duration_secs,
    });
    let mut report = Report::new("store", config);
    let mib = |bytes: u64, secs: f64| bytes as f64 / (1 << 20) as f64 / secs;
    report.add("put throughput", mib(puts.bytes.load(Ordering::Relaxed), put_secs), "MiB/s");
    report.latency("put latency", &puts.histogram());
    report.add("put errors", puts.errors.load(Ordering::Relaxed) as f64, "");
    report.add("get throughput", mib(gets.bytes.load(Ordering::Relaxed), get_secs), "MiB/s");
    report.latency("get latency", &gets.histogram());
    report.add("get errors", gets.errors.load(Ordering::Relaxed) as f64, "");
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_block_of_two_objects_differs() {
        let template: Vec<u8> = (0..(3 * STAMP_EVERY + 100)).map(|i| (i % 251) as u8).collect();
        let (a, b) = (unique_object(&template, 1), unique_object(&template, 2));
        assert_eq!(a.len(), template.len());
        for (x, y) in a.chunks(STAMP_EVERY).zip(b.chunks(STAMP_EVERY)) {
            assert_ne!(x, y);
        }
        // only the stamps differ from the template
        assert_eq!(a[8..STAMP_EVERY], template[8..STAMP_EVERY]);
    }
}
