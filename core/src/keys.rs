//! The object-key layout in the bucket (relative to the store's prefix).
//!
//! ```text
//! segments/{xx}/{ulid}.seg    gateway flushes; xx spreads keys over S3 prefixes
//! ```

use object_store::path::Path;
use ulid::Ulid;

/// The key of a freshly flushed segment. The two hex digits come from the
/// ULID's random bits, so flushes spread evenly over 256 key prefixes.
pub fn segment_key(id: Ulid) -> Path {
    let spread = (id.random() & 0xff) as u8;
    Path::from(format!("segments/{spread:02x}/{id}.seg"))
}

/// When the segment at `key` was named (its ULID's time, the writing
/// gateway's clock), if `key` is a segment key.
pub fn segment_written_ms(key: &str) -> Option<i64> {
    let name = key.strip_prefix("segments/")?.split_once('/')?.1.strip_suffix(".seg")?;
    let id = Ulid::from_string(name).ok()?;
    i64::try_from(id.timestamp_ms()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_keys_are_spread_and_unique() {
        let a = segment_key(Ulid::from_parts(1, 0x1234));
        assert_eq!(a.as_ref(), format!("segments/34/{}.seg", Ulid::from_parts(1, 0x1234)));
        assert_ne!(segment_key(Ulid::from_parts(1, 1)), segment_key(Ulid::from_parts(1, 2)));
    }

    #[test]
    fn a_segment_key_tells_when_it_was_written() {
        let key = segment_key(Ulid::from_parts(1_700_000_000_123, 42));
        assert_eq!(segment_written_ms(key.as_ref()), Some(1_700_000_000_123));
        assert_eq!(segment_written_ms("segments/00/x.seg"), None);
        assert_eq!(segment_written_ms("archive/topic=t/partition=0/a.parquet"), None);
    }
}
