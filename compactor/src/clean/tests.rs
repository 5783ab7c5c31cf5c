use super::*;
use crate::fixtures::files;

#[test]
fn a_partition_never_cleaned_here_is_due_once_it_has_files() {
    assert!(!due(&[], None, 0), "nothing to clean");
    assert!(due(&files(&[(100, 0)]), None, 0));
}

#[test]
fn cleaning_waits_until_half_the_archive_is_dirty() {
    let f = files(&[(300, 0), (100, 0), (200, 0)]);
    let cleaned_to = |to| Some(Cleaned { to, tombstones_due_ms: None });
    assert!(!due(&f, cleaned_to(30), 0), "all clean");
    assert!(!due(&f, cleaned_to(20), 0), "200 of 600 bytes dirty");
    assert!(due(&f, cleaned_to(10), 0), "300 of 600 bytes dirty");
    assert!(due(&f, cleaned_to(15), 0), "a file straddling the cleaned point counts as dirty");
}

#[test]
fn a_kept_tombstone_makes_the_archive_due_when_it_may_go() {
    let f = files(&[(100, 0)]);
    let last = Some(Cleaned { to: 10, tombstones_due_ms: Some(5000) });
    assert!(!due(&f, last, 4999));
    assert!(due(&f, last, 5000));
}

#[test]
fn only_the_prefix_settled_past_the_grace_is_cleaned() {
    let f = files(&[(100, 0), (100, 500), (100, 2000), (100, 100)]);
    let prefix: Vec<u64> = settled(&f, 2500, 1000).iter().map(|s| s.base_offset).collect();
    assert_eq!(prefix, [0, 10], "a young file ends the prefix, even before older ones");
    assert!(settled(&f, 100, 1000).is_empty());
}

#[test]
fn keys_are_told_apart_by_a_wide_hash() {
    let map = KeyMap { latest: [(key_hash(b"a"), 7)].into_iter().collect(), end: 10 };
    assert!(map.superseded(b"a", 3), "a later record of the key");
    assert!(!map.superseded(b"a", 7), "the latest itself");
    assert!(!map.superseded(b"b", 3), "another key");
    assert_ne!(key_hash(b""), key_hash(b"\0"), "an empty key is a key of its own");
}
