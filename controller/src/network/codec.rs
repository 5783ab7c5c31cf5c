//! The bytes of Raft RPCs between controllers.
//!
//! Requests and replies are MessagePack with named fields (compact, and
//! tolerant of the optional fields our commands carry). A snapshot chunk is
//! framed so that its data travels as raw bytes, not as an array of numbers:
//! `header_len: u32 LE`, the header (everything but the data) as MessagePack,
//! then the chunk's data.
//!
//! Every route has a body limit that matches what a sender may send:
//! appends are split below [`APPEND_TARGET_BYTES`] (one entry is never larger
//! than [`MAX_APPEND_BYTES`]), snapshot chunks are at most
//! [`SNAPSHOT_CHUNK_BYTES`] plus a small header.

use openraft::Vote;
use openraft::raft::InstallSnapshotRequest;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::types::{NodeId, SnapshotMeta, TypeConfig};

/// Content type of every Raft RPC body.
pub const CONTENT_TYPE: &str = "application/msgpack";
/// A sender splits an append whose body would be larger than this.
pub const APPEND_TARGET_BYTES: usize = 8 << 20;
/// Largest append body a node takes (a single entry may exceed the target).
pub const MAX_APPEND_BYTES: usize = 64 << 20;
/// Data bytes in one snapshot chunk (openraft's `snapshot_max_chunk_size`).
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;
/// Largest snapshot chunk body: the data plus its header (vote and meta).
pub const MAX_SNAPSHOT_CHUNK_BODY: usize = SNAPSHOT_CHUNK_BYTES + (1 << 20);
/// Largest vote body.
pub const MAX_VOTE_BYTES: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("encoding: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    #[error("decoding: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    #[error("snapshot chunk is truncated")]
    Truncated,
}

pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(rmp_serde::to_vec_named(value)?)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    Ok(rmp_serde::from_slice(bytes)?)
}

/// A snapshot chunk without its data.
#[derive(Debug, Serialize, Deserialize)]
struct ChunkHeader {
    vote: Vote<NodeId>,
    meta: SnapshotMeta,
    offset: u64,
    done: bool,
}

pub fn encode_snapshot_chunk(rpc: &InstallSnapshotRequest<TypeConfig>) -> Result<Vec<u8>, CodecError> {
    let header = ChunkHeader { vote: rpc.vote, meta: rpc.meta.clone(), offset: rpc.offset, done: rpc.done };
    let header = encode(&header)?;
    let mut out = Vec::with_capacity(4 + header.len() + rpc.data.len());
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&rpc.data);
    Ok(out)
}

pub fn decode_snapshot_chunk(bytes: &[u8]) -> Result<InstallSnapshotRequest<TypeConfig>, CodecError> {
    let len: [u8; 4] = bytes.get(..4).and_then(|b| b.try_into().ok()).ok_or(CodecError::Truncated)?;
    let header_end = 4usize.saturating_add(u32::from_le_bytes(len) as usize);
    let header: ChunkHeader = decode(bytes.get(4..header_end).ok_or(CodecError::Truncated)?)?;
    Ok(InstallSnapshotRequest {
        vote: header.vote,
        meta: header.meta,
        offset: header.offset,
        data: bytes[header_end..].to_vec(),
        done: header.done,
    })
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, LogId, Membership, StoredMembership};
    use proptest::prelude::*;

    use super::*;

    fn chunk(data: Vec<u8>, offset: u64, done: bool) -> InstallSnapshotRequest<TypeConfig> {
        let log_id = LogId::new(CommittedLeaderId::new(3, 1), 77);
        let membership = Membership::new(vec![[1, 2, 3].into()], None);
        InstallSnapshotRequest {
            vote: Vote::new_committed(3, 1),
            meta: SnapshotMeta {
                last_log_id: Some(log_id),
                last_membership: StoredMembership::new(Some(log_id), membership),
                snapshot_id: "3-77".into(),
            },
            offset,
            data,
            done,
        }
    }

    proptest! {
        #[test]
        fn snapshot_chunks_round_trip(data in proptest::collection::vec(any::<u8>(), 0..4096), offset: u64, done: bool) {
            let rpc = chunk(data, offset, done);
            let bytes = encode_snapshot_chunk(&rpc).unwrap();
            // raw data plus a small header: no per-byte expansion
            prop_assert!(bytes.len() <= rpc.data.len() + 256);
            let back = decode_snapshot_chunk(&bytes).unwrap();
            prop_assert_eq!(back.data, rpc.data);
            prop_assert_eq!(back.offset, rpc.offset);
            prop_assert_eq!(back.done, rpc.done);
            prop_assert_eq!(back.meta, rpc.meta);
            prop_assert_eq!(back.vote, rpc.vote);
        }

        #[test]
        fn arbitrary_bytes_do_not_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_snapshot_chunk(&bytes);
            let _ = decode::<crate::types::Command>(&bytes);
        }
    }
}
