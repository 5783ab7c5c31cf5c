//! Write-ahead files for the Raft log. Each record goes to disk in one
//! aligned write with `O_DIRECT | O_DSYNC` into a file that was zero-filled
//! and synced ahead of time, by a helper thread. Such a write changes no
//! file metadata, so it is durable without an ext4 journal commit and does
//! not wait behind other files' writeback on the same disk. (A redb commit's
//! fsync did: up to 150–200 ms while the object store on the same disk wrote
//! back, the produce tail in docs/BENCHMARKS.md.)
//!
//! A file is `{seq:020}.wal` of [`FILE_BYTES`]; a record is
//! `magic u32 | seq u64 | len u32 | crc32c u32 | payload`, padded to a 4 KiB
//! block, the CRC covering seq, len and payload. Reading a file stops at the
//! first record that does not check (the zeros after the last one, or a torn
//! write), so a write that was never acknowledged is never read back. Where
//! `O_DIRECT` is refused (tmpfs), files are opened with `O_DSYNC` alone.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

/// Size of every file; a record must fit in one.
pub const FILE_BYTES: u64 = 16 << 20;
const BLOCK: usize = 4096;
const HEADER: usize = 20;
const MAGIC: u32 = 0x5348_574c; // "SHWL"

/// Work for the helper thread: files are made and removed off the write path.
enum Job {
    Prepare(u64),
    Remove(u64),
}

/// The open log: the file being appended to and the next one, being prepared.
pub struct Wal {
    dir: PathBuf,
    file: File,
    seq: u64,
    at: u64,
    jobs: mpsc::Sender<Job>,
    prepared: mpsc::Receiver<io::Result<(u64, File)>>,
    helper: Option<std::thread::JoinHandle<()>>,
}

/// What was read back from one file.
pub struct Replayed {
    pub seq: u64,
    pub records: Vec<Vec<u8>>,
}

fn file_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.wal"))
}

fn open_synced(path: &Path) -> io::Result<File> {
    let open = |flags| OpenOptions::new().read(true).write(true).custom_flags(flags).open(path);
    match open(libc::O_DIRECT | libc::O_DSYNC) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => open(libc::O_DSYNC),
        other => other,
    }
}

/// Creates file `seq` full of zeros, synced, under its final name.
fn prepare(dir: &Path, seq: u64) -> io::Result<File> {
    let path = file_path(dir, seq);
    let temp = path.with_extension("tmp");
    {
        let file = File::create(&temp)?;
        let zeros = vec![0u8; 1 << 20];
        for i in 0..FILE_BYTES / zeros.len() as u64 {
            file.write_all_at(&zeros, i * zeros.len() as u64)?;
        }
        file.sync_all()?;
    }
    std::fs::rename(&temp, &path)?;
    File::open(dir)?.sync_all()?;
    open_synced(&path)
}

fn helper(dir: PathBuf, jobs: mpsc::Receiver<Job>, prepared: mpsc::SyncSender<io::Result<(u64, File)>>) {
    for job in jobs {
        match job {
            Job::Prepare(seq) => {
                if prepared.send(prepare(&dir, seq).map(|f| (seq, f))).is_err() {
                    return;
                }
            }
            Job::Remove(seq) => {
                if let Err(e) = std::fs::remove_file(file_path(&dir, seq)) {
                    tracing::warn!(seq, error = %e, "cannot remove an old Raft log file");
                }
            }
        }
    }
}

/// The records of one file's bytes, up to the first that does not check.
fn records(seq: u64, bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + HEADER) {
        let word = |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
        let (magic, len, crc) = (word(0), word(12) as usize, word(16));
        let Some(payload) = bytes.get(at + HEADER..at + HEADER + len) else { break };
        let checks = crc32c::crc32c_append(crc32c::crc32c(&header[4..16]), payload) == crc
            && header[4..12] == seq.to_le_bytes();
        if magic != MAGIC || !checks {
            break;
        }
        out.push(payload.to_vec());
        at += Wal::blocks(len);
    }
    out
}

impl Wal {
    /// Opens the files in `dir` (creating it), answering every record in
    /// order, grouped by file. Appends continue after the last record.
    pub fn open(dir: &Path) -> io::Result<(Self, Vec<Replayed>)> {
        std::fs::create_dir_all(dir)?;
        let mut seqs = Vec::new();
        for item in std::fs::read_dir(dir)? {
            let name = item?.file_name();
            let name = name.to_string_lossy();
            if let Some(seq) = name.strip_suffix(".wal").and_then(|s| s.parse::<u64>().ok()) {
                seqs.push(seq);
            } else if name.ends_with(".tmp") {
                std::fs::remove_file(dir.join(name.as_ref()))?;
            }
        }
        seqs.sort_unstable();
        let mut replayed = Vec::with_capacity(seqs.len());
        for &seq in &seqs {
            let bytes = std::fs::read(file_path(dir, seq))?;
            replayed.push(Replayed { seq, records: records(seq, &bytes) });
        }
        let (seq, file, at) = match replayed.last() {
            Some(last) => {
                let at = last.records.iter().map(|r| Self::blocks(r.len())).sum::<usize>();
                (last.seq, open_synced(&file_path(dir, last.seq))?, at as u64)
            }
            None => (1, prepare(dir, 1)?, 0),
        };
        let (jobs, job_rx) = mpsc::channel();
        let (prepared_tx, prepared) = mpsc::sync_channel(1);
        let helper_dir = dir.to_owned();
        let helper = std::thread::Builder::new()
            .name("raft-log-files".into())
            .spawn(move || helper(helper_dir, job_rx, prepared_tx))?;
        let _ = jobs.send(Job::Prepare(seq + 1));
        let helper = Some(helper);
        Ok((Self { dir: dir.to_owned(), file, seq, at, jobs, prepared, helper }, replayed))
    }

    /// The file appends go to.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Whether a record of `len` payload bytes fits in the current file.
    pub fn fits(&self, len: usize) -> bool {
        self.at + Self::blocks(len) as u64 <= FILE_BYTES
    }

    /// Bytes a record of `len` payload bytes takes on disk: whole blocks.
    fn blocks(len: usize) -> usize {
        (HEADER + len).div_ceil(BLOCK) * BLOCK
    }

    /// Moves appends to the next file (prepared ahead by the helper).
    pub fn rotate(&mut self) -> io::Result<()> {
        let (seq, file) =
            self.prepared.recv().map_err(|_| io::Error::other("the Raft log's file helper stopped"))??;
        (self.seq, self.file, self.at) = (seq, file, 0);
        let _ = self.jobs.send(Job::Prepare(seq + 1));
        tracing::debug!(seq, dir = %self.dir.display(), "Raft log moved to a new file");
        Ok(())
    }

    /// Writes one record; durable when this returns.
    pub fn append(&mut self, payload: &[u8]) -> io::Result<()> {
        let size = Self::blocks(payload.len());
        if !self.fits(payload.len()) {
            return Err(io::Error::other(format!(
                "a Raft log record of {} bytes does not fit",
                payload.len()
            )));
        }
        let len = u32::try_from(payload.len()).map_err(io::Error::other)?;
        // O_DIRECT needs a block-aligned buffer: take an aligned window of a larger one
        let mut buffer = vec![0u8; size + BLOCK];
        let start = buffer.as_ptr().align_offset(BLOCK);
        let block = &mut buffer[start..start + size];
        block[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        block[4..12].copy_from_slice(&self.seq.to_le_bytes());
        block[12..16].copy_from_slice(&len.to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&block[4..16]), payload);
        block[16..20].copy_from_slice(&crc.to_le_bytes());
        block[HEADER..HEADER + payload.len()].copy_from_slice(payload);
        self.file.write_all_at(block, self.at)?;
        self.at += size as u64;
        Ok(())
    }

    /// Removes file `seq`, in the background; it must hold nothing needed.
    pub fn remove(&self, seq: u64) {
        let _ = self.jobs.send(Job::Remove(seq));
    }
}

/// Waits for the helper to finish the file it is making, so that a log
/// opened again on the same directory never races it for that file.
impl Drop for Wal {
    fn drop(&mut self) {
        // with both channels closed the helper stops once the queued jobs are done
        drop(std::mem::replace(&mut self.jobs, mpsc::channel().0));
        drop(std::mem::replace(&mut self.prepared, mpsc::sync_channel(1).1));
        if let Some(helper) = self.helper.take()
            && helper.join().is_err()
        {
            tracing::warn!(dir = %self.dir.display(), "the Raft log's file helper panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_come_back_in_order_across_files_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let payloads: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 1 + usize::from(i) * 997]).collect();
        {
            let (mut wal, replayed) = Wal::open(dir.path()).expect("open");
            assert!(replayed.iter().all(|r| r.records.is_empty()));
            for (i, p) in payloads.iter().enumerate() {
                if i == 25 {
                    wal.rotate().expect("rotate");
                }
                wal.append(p).expect("append");
            }
            assert_eq!(wal.seq(), 2);
        }
        // a torn write after the last record of file 2: a header whose payload never landed
        let path = file_path(dir.path(), 2);
        let bytes = std::fs::read(&path).expect("read");
        let end: usize = payloads[25..].iter().map(|p| Wal::blocks(p.len())).sum();
        let mut torn = bytes.clone();
        torn[end..end + 4].copy_from_slice(&MAGIC.to_le_bytes());
        torn[end + 4..end + 12].copy_from_slice(&2u64.to_le_bytes());
        torn[end + 12..end + 16].copy_from_slice(&100u32.to_le_bytes());
        std::fs::write(&path, &torn).expect("write");

        let (mut wal, replayed) = Wal::open(dir.path()).expect("reopen");
        let got: Vec<Vec<u8>> = replayed.iter().flat_map(|r| r.records.clone()).collect();
        assert_eq!(got, payloads);
        assert_eq!(replayed.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3], "file 3 was prepared");
        // appends go on in the newest file
        assert_eq!(wal.seq(), 3);
        wal.append(b"after").expect("append");
        drop(wal);
        let (_, replayed) = Wal::open(dir.path()).expect("reopen");
        let last = replayed.iter().flat_map(|r| r.records.clone()).last();
        assert_eq!(last.as_deref(), Some(&b"after"[..]));
    }

    #[test]
    fn garbage_and_records_of_another_file_are_not_read() {
        let mut bytes = vec![0u8; 3 * BLOCK];
        assert!(records(1, &bytes).is_empty());
        bytes.iter_mut().enumerate().for_each(|(i, b)| *b = (i * 31 % 251) as u8);
        assert!(records(1, &bytes).is_empty());
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = Wal::open(dir.path()).expect("open");
        wal.append(b"one").expect("append");
        let written = std::fs::read(file_path(dir.path(), 1)).expect("read");
        assert_eq!(records(1, &written), vec![b"one".to_vec()]);
        assert!(records(7, &written).is_empty(), "a record names the file it belongs to");
    }

    #[test]
    fn a_file_system_without_o_direct_still_gets_durable_records() {
        let shm = Path::new("/dev/shm");
        if !shm.is_dir() {
            eprintln!("skipped: no /dev/shm (tmpfs) on this machine to refuse O_DIRECT");
            return;
        }
        let dir = tempfile::tempdir_in(shm).expect("tempdir");
        {
            let (mut wal, _) = Wal::open(dir.path()).expect("open");
            wal.append(b"on tmpfs").expect("append");
        }
        let (_, replayed) = Wal::open(dir.path()).expect("reopen");
        assert_eq!(replayed[0].records, vec![b"on tmpfs".to_vec()]);
    }
}
