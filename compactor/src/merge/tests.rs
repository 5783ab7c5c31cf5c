use super::*;
use crate::fixtures::files;

const DAY: i64 = DAY_MS;

fn config() -> CompactorConfig {
    CompactorConfig { gc_grace_ms: 1000, merge_target_bytes: 1000, ..CompactorConfig::new("c".into()) }
}

fn chosen(specs: &[(u32, i64)], now: i64) -> Option<Vec<u64>> {
    choose(&files(specs), now, &config()).map(|g| g.iter().map(|f| f.base_offset).collect())
}

#[test]
fn small_files_merge_once_they_reach_half_the_target() {
    let now = DAY / 2;
    assert_eq!(chosen(&[(200, 0), (200, 0)], now), None, "400 bytes: not yet");
    assert_eq!(chosen(&[(200, 0), (200, 0), (200, 0)], now), Some(vec![0, 10, 20]));
}

#[test]
fn young_files_and_large_files_stay() {
    let now = DAY / 2;
    assert_eq!(chosen(&[(300, now - 10), (300, now - 10)], now), None, "within the grace");
    assert_eq!(
        chosen(&[(600, 0), (300, 0), (300, 0)], now),
        Some(vec![10, 20]),
        "a large file is never input"
    );
    assert_eq!(chosen(&[(300, 0), (600, 0), (300, 0)], now), None, "only consecutive files merge");
}

#[test]
fn a_finished_day_merges_whatever_its_size_and_days_never_mix() {
    let now = DAY + DAY / 2;
    assert_eq!(chosen(&[(10, 5), (10, 6)], now), Some(vec![0, 10]), "yesterday's files");
    assert_eq!(chosen(&[(10, 5), (10, DAY + 5)], now), None, "one file per day");
    assert_eq!(chosen(&[(10, DAY + 1), (10, DAY + 2)], now), None, "today's small files wait");
}

#[test]
fn many_small_files_merge_whatever_their_size() {
    let now = DAY / 2;
    let specs = vec![(1, 0); MAX_SMALL_FILES];
    assert_eq!(chosen(&specs, now).map(|g| g.len()), Some(MAX_SMALL_FILES));
    assert_eq!(chosen(&specs[1..], now), None);
}

#[test]
fn a_group_never_exceeds_the_target() {
    let now = DAY / 2;
    let group = chosen(&[(400, 0), (400, 0), (400, 0), (400, 0)], now).expect("a group");
    assert_eq!(group, [0, 10], "800 bytes; a third file would pass 1000");
}
