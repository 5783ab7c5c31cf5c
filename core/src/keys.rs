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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_keys_are_spread_and_unique() {
        let a = segment_key(Ulid::from_parts(1, 0x1234));
        assert_eq!(a.as_ref(), format!("segments/34/{}.seg", Ulid::from_parts(1, 0x1234)));
        assert_ne!(segment_key(Ulid::from_parts(1, 1)), segment_key(Ulid::from_parts(1, 2)));
    }
}
