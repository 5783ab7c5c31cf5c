use bytes::Bytes;

use super::*;

/// The newest chunks must stay readable even once the cache is full: tailing
/// consumers read each chunk right after the batcher inserts it.
#[test]
fn the_newest_chunks_survive_a_full_cache() {
    let cache = new_cache(32 << 20);
    let records = Arc::new(Loaded::dense(
        (0..256).map(|_| Record { value: Some(Bytes::from(vec![7u8; 1024])), ..Record::default() }).collect(),
    ));
    let id = |i: u64| ChunkId { object: format!("segments/00/{i}.seg"), position: 9 };
    // about 56 MiB into a 32 MiB cache, a flush of four chunks at a time, each
    // read only after its flush (as a long-poll does)
    for flush in 0..50u64 {
        let ids: Vec<u64> = (flush * 4..flush * 4 + 4).collect();
        for i in &ids {
            cache.insert(id(*i), records.clone());
        }
        let lost: Vec<&u64> = ids.iter().filter(|i| cache.get(&id(**i)).is_none()).collect();
        assert!(lost.is_empty(), "flush {flush}: chunks {lost:?} were evicted before anyone read them");
    }
    let newest_missing: Vec<u64> = (180..200).filter(|i| cache.get(&id(*i)).is_none()).collect();
    assert!(newest_missing.is_empty(), "the newest chunks were evicted: {newest_missing:?}");
    assert!(cache.weight() <= 32 << 20, "the cache stays within its bound");
}
