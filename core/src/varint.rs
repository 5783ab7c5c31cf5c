//! Zigzag LEB128 varints, as Kafka's record format uses, with a bounds-checked
//! reader that never panics on hostile bytes.

use bytes::{BufMut, Bytes};

/// Why bytes could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("unexpected end of data at byte {0}")]
    Truncated(usize),
    #[error("malformed varint at byte {0}")]
    BadVarint(usize),
}

pub fn put_varint(buf: &mut impl BufMut, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// A cursor over bytes whose every read is checked.
pub struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    pub fn new(buf: Bytes) -> Self {
        Self { buf, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn bytes(&mut self, n: usize) -> Result<Bytes, ReadError> {
        if n > self.remaining() {
            return Err(ReadError::Truncated(self.pos));
        }
        let out = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ReadError> {
        let mut out = [0u8; N];
        let b = self.bytes(N)?;
        out.copy_from_slice(&b);
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, ReadError> {
        Ok(self.array::<1>()?[0])
    }
    pub fn u16(&mut self) -> Result<u16, ReadError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32, ReadError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, ReadError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub fn i64(&mut self) -> Result<i64, ReadError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    pub fn varint(&mut self) -> Result<i64, ReadError> {
        let start = self.pos;
        let mut result: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = self.u8().map_err(|_| ReadError::Truncated(start))?;
            result |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(((result >> 1) as i64) ^ -((result & 1) as i64));
            }
        }
        Err(ReadError::BadVarint(start))
    }

    /// A varint that must be a length in `0..=remaining`.
    pub fn len_prefixed(&mut self) -> Result<Bytes, ReadError> {
        let at = self.pos;
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| ReadError::BadVarint(at))?;
        self.bytes(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn varint_round_trip(v in any::<i64>()) {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            let mut r = Reader::new(Bytes::from(buf));
            prop_assert_eq!(r.varint().ok(), Some(v));
            prop_assert_eq!(r.remaining(), 0);
        }

        #[test]
        fn varint_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            let _ = Reader::new(Bytes::from(bytes)).varint();
        }
    }
}
