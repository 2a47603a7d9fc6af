//! State on disk: a snapshot plus an append-only journal of keyed records,
//! and the `journal` thread that makes each state-loop turn durable before
//! its effects (Mesos calls, REST replies) leave the process.
//!
//! Each record is framed as `len: u32 LE | crc32: u32 LE | payload`, where the
//! checksum covers the length bytes and the payload, and the payload is JSON
//! `{"key": ..., "value": ...}`; a null value deletes the key. Loading replays the snapshot, then the journal; the last value of a
//! key wins. A torn last record (a crash in the middle of an append) is
//! dropped with a warning; damage anywhere else stops startup with the file
//! and byte offset, and nothing is discarded silently. When the journal
//! outgrows the snapshot, the live records are written to a new snapshot
//! (write, fsync, rename, fsync the directory) and the journal starts over.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crossbeam_channel::{Receiver, Sender};
use serde_json::{json, Value};

use crate::scheduler::state::Record;
use crate::scheduler::{Call, Committed, Turn};

/// The largest record accepted on load; anything claiming more is damage.
pub const MAX_RECORD: usize = 16 * 1024 * 1024;

/// Turns committed with one fsync, at most.
pub const MAX_GROUP: usize = 1024;

/// The journal is compacted once it is larger than this and than twice the snapshot.
pub const COMPACT_MIN_BYTES: u64 = 4 * 1024 * 1024;

/// Exit code when the state directory fails: nothing that depended on the
/// lost write has left the process, and a restart resumes from the disk.
pub const EXIT_STATE_NOT_SAVED: i32 = 3;

/// The file a running scheduler holds an exclusive lock on, so two processes
/// never share a state directory (each would overwrite the other's journal
/// and fight over the framework).
pub const LOCK_FILE: &str = "lock";

const SNAPSHOT: &str = "state.snapshot";
const JOURNAL: &str = "state.journal";
const HEADER: usize = 8;

/// The open state directory.
pub struct Store {
    dir: PathBuf,
    /// Holds the directory's exclusive lock for as long as the store lives.
    _lock: File,
    journal: File,
    journal_bytes: u64,
    snapshot_bytes: u64,
    /// Compact once the journal is larger than this.
    compact_at: u64,
    /// The live value of every key, framed, for compaction.
    live: BTreeMap<String, Vec<u8>>,
    /// Test hook (`Config::journal_delay`, zero in production): each commit
    /// waits this long before its fsync, like a slow disk.
    commit_delay: std::time::Duration,
}

impl Store {
    /// Opens (creating if needed) `dir` and returns what it holds, in order.
    pub fn open(dir: &Path) -> Result<(Store, Vec<Record>), String> {
        fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create state directory {}: {e}", dir.display()))?;
        let lock = lock_dir(dir)?;
        let snapshot_path = dir.join(SNAPSHOT);
        let journal_path = dir.join(JOURNAL);
        // A leftover of a compaction that did not finish; the old snapshot stands.
        let _ = fs::remove_file(dir.join(format!("{SNAPSHOT}.tmp")));
        let snapshot = read_file(&snapshot_path)?;
        let (mut records, end) =
            decode(&snapshot).map_err(|d| damaged(&snapshot_path, d.offset, &d.why))?;
        if end != snapshot.len() {
            return Err(damaged(&snapshot_path, end, "incomplete record"));
        }
        let journal_data = read_file(&journal_path)?;
        let (journal_records, end) = match decode(&journal_data) {
            Ok(done) => done,
            Err(Damage {
                offset, torn: true, ..
            }) => (
                decode(&journal_data[..offset])
                    .map_err(|d| damaged(&journal_path, d.offset, &d.why))?
                    .0,
                offset,
            ),
            Err(damage) => return Err(damaged(&journal_path, damage.offset, &damage.why)),
        };
        let journal = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&journal_path)
            .map_err(|e| format!("cannot open {}: {e}", journal_path.display()))?;
        if end != journal_data.len() {
            log::warn!(
                "state: dropping a torn last record in {} at byte {end} ({} bytes); it was never acknowledged",
                journal_path.display(),
                journal_data.len() - end
            );
            journal
                .set_len(end as u64)
                .map_err(|e| format!("cannot truncate {}: {e}", journal_path.display()))?;
            journal
                .sync_all()
                .map_err(|e| format!("cannot sync {}: {e}", journal_path.display()))?;
        }
        sync_dir(dir)?;
        records.extend(journal_records);
        let mut live = BTreeMap::new();
        for record in &records {
            remember(&mut live, record);
        }
        let store = Store {
            dir: dir.to_path_buf(),
            _lock: lock,
            journal,
            journal_bytes: end as u64,
            snapshot_bytes: snapshot.len() as u64,
            compact_at: COMPACT_MIN_BYTES.max(2 * snapshot.len() as u64),
            live,
            commit_delay: std::time::Duration::ZERO,
        };
        log::info!(
            "state: loaded {} records ({} live keys) from {}",
            records.len(),
            store.live.len(),
            dir.display()
        );
        Ok((store, records))
    }

    /// Test hook: every commit from now on waits `delay` before its fsync.
    pub fn set_commit_delay(&mut self, delay: std::time::Duration) {
        self.commit_delay = delay;
    }

    /// Appends records and fsyncs: when this returns Ok they survive a crash.
    /// An `Err` means they may not be on disk; the caller must not let
    /// anything that depends on them out (see `run_journal`).
    pub fn commit(&mut self, records: &[&Record]) -> Result<(), String> {
        let mut out = Vec::new();
        for record in records {
            let framed = frame(record);
            if framed.len() - HEADER > MAX_RECORD {
                return Err(format!(
                    "record {} is {} bytes, over the limit of {MAX_RECORD}",
                    record.key,
                    framed.len()
                ));
            }
            out.extend_from_slice(&framed);
        }
        if !self.commit_delay.is_zero() {
            std::thread::sleep(self.commit_delay);
        }
        let written = self
            .journal
            .write_all(&out)
            .and_then(|()| self.journal.sync_data());
        if let Err(e) = written {
            // Leave no half record behind for a later append to bury.
            let _ = self
                .journal
                .set_len(self.journal_bytes)
                .and_then(|()| self.journal.sync_all());
            return Err(format!(
                "cannot write {}: {e}",
                self.dir.join(JOURNAL).display()
            ));
        }
        for record in records {
            remember(&mut self.live, record);
        }
        self.journal_bytes += out.len() as u64;
        if self.journal_bytes > self.compact_at {
            // The records are durable either way; a failed compaction waits
            // for the journal to grow again before the next try.
            if let Err(error) = self.compact() {
                log::error!("state: compaction failed, the journal keeps growing: {error}");
                self.compact_at = self.journal_bytes + COMPACT_MIN_BYTES;
            }
        }
        Ok(())
    }

    /// Writes every live record to a new snapshot and empties the journal.
    pub fn compact(&mut self) -> Result<(), String> {
        let tmp = self.dir.join(format!("{SNAPSHOT}.tmp"));
        let data: Vec<u8> = self.live.values().flatten().copied().collect();
        let io = |what: &str, e: io::Error| format!("cannot {what} {}: {e}", tmp.display());
        let mut file = File::create(&tmp).map_err(|e| io("create", e))?;
        file.write_all(&data).map_err(|e| io("write", e))?;
        file.sync_all().map_err(|e| io("sync", e))?;
        fs::rename(&tmp, self.dir.join(SNAPSHOT)).map_err(|e| io("rename", e))?;
        sync_dir(&self.dir)?;
        // From here a crash replays the old journal over the new snapshot: same result.
        self.journal
            .set_len(0)
            .map_err(|e| io("truncate the journal after", e))?;
        self.journal
            .sync_all()
            .map_err(|e| io("sync the journal after", e))?;
        log::info!(
            "state: compacted {} journal bytes into a {} byte snapshot",
            self.journal_bytes,
            data.len()
        );
        self.snapshot_bytes = data.len() as u64;
        self.journal_bytes = 0;
        self.compact_at = COMPACT_MIN_BYTES.max(2 * self.snapshot_bytes);
        Ok(())
    }
}

fn damaged(path: &Path, offset: usize, why: &str) -> String {
    format!(
        "state file {} is damaged at byte offset {offset}: {why}; refusing to start rather than lose state (move the file away to start without it)",
        path.display()
    )
}

fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    let mut data = Vec::new();
    match File::open(path) {
        Ok(mut file) => file
            .read_to_end(&mut data)
            .map_err(|e| format!("cannot read state file {}: {e}", path.display()))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(format!("cannot open state file {}: {e}", path.display())),
    };
    Ok(data)
}

fn sync_dir(dir: &Path) -> Result<(), String> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("cannot sync directory {}: {e}", dir.display()))
}

fn remember(live: &mut BTreeMap<String, Vec<u8>>, record: &Record) {
    match record.value {
        Some(_) => live.insert(record.key.clone(), frame(record)),
        None => live.remove(&record.key),
    };
}

/// One framed record.
pub fn frame(record: &Record) -> Vec<u8> {
    let payload = json!({"key": record.key, "value": record.value})
        .to_string()
        .into_bytes();
    let length = (payload.len() as u32).to_le_bytes();
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&length);
    out.extend_from_slice(&checksum(&length, &payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// The frame checksum: over the length bytes and the payload, so a run of
/// zeros (a file extended but never written) is no valid empty record.
fn checksum(length: &[u8; 4], payload: &[u8]) -> u32 {
    let mut bytes = Vec::with_capacity(4 + payload.len());
    bytes.extend_from_slice(length);
    bytes.extend_from_slice(payload);
    crc32(&bytes)
}

/// Where and why decoding stopped. `torn`: the bad record is the last one
/// and was cut short or fails its checksum, as an interrupted append leaves it.
#[derive(Debug)]
pub struct Damage {
    pub offset: usize,
    pub why: String,
    pub torn: bool,
}

/// Decodes whole records, up to the first bad one.
pub fn decode(data: &[u8]) -> Result<(Vec<Record>, usize), Damage> {
    let mut records = Vec::new();
    let mut offset = 0;
    while offset < data.len() {
        let rest = &data[offset..];
        // Zeros to the end: the file grew but its data never reached the disk.
        let zero_tail = rest.iter().all(|&b| b == 0);
        let damage = |why: String, torn: bool| Damage {
            offset,
            why,
            torn: torn || zero_tail,
        };
        if rest.len() < HEADER {
            return Err(damage(
                format!("record header cut short ({} of {HEADER} bytes)", rest.len()),
                true,
            ));
        }
        let length = [rest[0], rest[1], rest[2], rest[3]];
        let len = u32::from_le_bytes(length) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if len > MAX_RECORD {
            return Err(damage(
                format!("record length {len} is over the limit of {MAX_RECORD}"),
                false,
            ));
        }
        let Some(payload) = rest.get(HEADER..HEADER + len) else {
            return Err(damage(
                format!("record cut short ({} of {len} bytes)", rest.len() - HEADER),
                true,
            ));
        };
        if checksum(&length, payload) != crc {
            return Err(damage(
                "checksum mismatch".to_string(),
                rest.len() == HEADER + len,
            ));
        }
        let value: Value = serde_json::from_slice(payload)
            .map_err(|e| damage(format!("record is not JSON: {e}"), false))?;
        let Some(key) = value["key"].as_str() else {
            return Err(damage("record has no key".to_string(), false));
        };
        let record_value = match &value["value"] {
            Value::Null => None,
            other => Some(other.clone()),
        };
        records.push(Record {
            key: key.to_string(),
            value: record_value,
        });
        offset += HEADER + len;
    }
    Ok((records, offset))
}

/// CRC-32 (IEEE 802.3), bitwise table built at compile time.
pub fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut n = 0;
        while n < 256 {
            let mut c = n as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[n] = c;
            n += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &byte in data {
        crc = TABLE[((crc ^ u32::from(byte)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// The `journal` thread: commits each group of turns with one fsync, then
/// lets their effects out: replies back to the state thread (which holds the
/// HTTP workers' reply channels), calls to the `mesos-caller`. Without a
/// store it only forwards. Returns when its inbox closes (after the state
/// thread ends) or the caller is gone.
pub fn run_journal(
    mut store: Option<Store>,
    inbox: Receiver<Turn>,
    calls: Sender<Call>,
    committed: Sender<Committed>,
) {
    while let Ok(first) = inbox.recv() {
        let mut turns = vec![first];
        while turns.len() < MAX_GROUP {
            match inbox.try_recv() {
                Ok(turn) => turns.push(turn),
                Err(_) => break,
            }
        }
        let records: Vec<&Record> = turns.iter().flat_map(|turn| &turn.records).collect();
        if let Some(store) = store.as_mut().filter(|_| !records.is_empty()) {
            if let Err(error) = store.commit(&records) {
                // Going on would send launches and 202s the disk does not
                // back. Stop before any of this group's effects leave; a
                // restart (systemd) resumes from the last durable state.
                log::error!("state not saved, stopping: {error}");
                log::logger().flush();
                std::process::exit(EXIT_STATE_NOT_SAVED);
            }
        }
        // Replies first: a slow master must not hold up the REST API. Once
        // the state thread has stopped, nobody waits for them.
        let replies: Committed = turns
            .iter_mut()
            .flat_map(|turn| std::mem::take(&mut turn.replies))
            .collect();
        if !replies.is_empty() {
            let _ = committed.send(replies);
        }
        for turn in turns {
            for call in turn.calls {
                if calls.send(call).is_err() {
                    return;
                }
            }
        }
    }
}

/// Takes the exclusive lock on `dir`; released when the returned file closes
/// (also when the process dies, so a crash leaves no stale lock).
fn lock_dir(dir: &Path) -> Result<File, String> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(format!(
            "state directory {} is in use by another charmander-scheduler (it holds the lock on {}); two schedulers on one --state-dir would corrupt it",
            dir.display(),
            path.display()
        )),
        Err(fs::TryLockError::Error(e)) => {
            Err(format!("cannot lock {}: {e}", path.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, value: Option<Value>) -> Record {
        Record {
            key: key.to_string(),
            value,
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("charmander-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    /// See: issue 8, finding 2. Two processes on one state dir each append
    /// to the journal and fight over the framework.
    #[test]
    fn a_second_open_of_one_state_dir_is_refused_until_the_first_closes() {
        let dir = temp_dir("locked");
        let (first, _) = Store::open(&dir).expect("opens");
        let error = Store::open(&dir).err().unwrap_or_default();
        assert!(
            error.contains(&format!("state directory {} is in use", dir.display())),
            "{error}"
        );
        drop(first);
        assert!(Store::open(&dir).is_ok(), "the lock outlived its store");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn records_round_trip_and_the_last_value_wins() {
        let dir = temp_dir("round-trip");
        let (mut store, records) = Store::open(&dir).expect("opens");
        assert!(records.is_empty());
        let a1 = record("task/a", Some(json!({"n": 1})));
        let b = record("task/b", Some(json!({"n": 2})));
        let a2 = record("task/a", None);
        store.commit(&[&a1, &b]).expect("commits");
        store.commit(&[&a2]).expect("commits");
        drop(store);
        let (store, records) = Store::open(&dir).expect("reopens");
        assert_eq!(records, vec![a1, b.clone(), a2]);
        assert_eq!(store.live.keys().collect::<Vec<_>>(), ["task/b"]);
        let mut store = store;
        store.compact().expect("compacts");
        drop(store);
        let (_, records) = Store::open(&dir).expect("reopens after compaction");
        assert_eq!(records, vec![b]);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn compaction_keeps_the_files_bounded_while_one_key_is_rewritten() {
        let dir = temp_dir("bounded");
        let (mut store, _) = Store::open(&dir).expect("opens");
        let padding = "x".repeat(1000);
        for n in 0..10_000 {
            let update = record("task/busy", Some(json!({"n": n, "pad": padding})));
            store.commit(&[&update]).expect("commits");
        }
        let size = |name: &str| fs::metadata(dir.join(name)).map_or(0, |m| m.len());
        // About 10 MB were written; the files hold one record plus at most one journal's worth.
        assert!(
            size(JOURNAL) <= COMPACT_MIN_BYTES + 2048,
            "journal {}",
            size(JOURNAL)
        );
        assert!(size(SNAPSHOT) < 2048, "snapshot {}", size(SNAPSHOT));
        drop(store);
        let (store, records) = Store::open(&dir).expect("reopens");
        assert_eq!(
            records
                .last()
                .and_then(|r| r.value.as_ref())
                .map(|v| v["n"].clone()),
            Some(json!(9999))
        );
        assert_eq!(store.live.len(), 1);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_crash_at_any_byte_of_an_append_loses_only_that_record() {
        let dir = temp_dir("torn");
        let kept = record("framework", Some(json!({"id": "f-0001"})));
        let torn = record("task/t", Some(json!({"spec": "x".repeat(100)})));
        let whole: Vec<u8> = [frame(&kept), frame(&torn)].concat();
        let first_len = frame(&kept).len();
        for cut in first_len..whole.len() {
            fs::create_dir_all(&dir).expect("dir");
            fs::write(dir.join(JOURNAL), &whole[..cut]).expect("write");
            let (_, records) = Store::open(&dir).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
            assert_eq!(records, vec![kept.clone()], "cut at {cut}");
            assert_eq!(
                fs::metadata(dir.join(JOURNAL)).map(|m| m.len()).ok(),
                Some(first_len as u64),
                "torn tail truncated"
            );
        }
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_tail_of_zeros_is_a_write_that_never_reached_the_disk() {
        let dir = temp_dir("zeros");
        fs::create_dir_all(&dir).expect("dir");
        let kept = record("framework", Some(json!({"id": "f-0001"})));
        let mut data = frame(&kept);
        data.extend(std::iter::repeat_n(0u8, 4096));
        fs::write(dir.join(JOURNAL), &data).expect("write");
        let (_, records) = Store::open(&dir).expect("zeros are torn, not damage");
        assert_eq!(records, vec![kept]);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn damage_before_the_end_stops_startup_with_file_and_offset() {
        let check = |name: &str, damage: &dyn Fn(&mut Vec<u8>), file: &str, expected: &str| {
            let dir = temp_dir(name);
            fs::create_dir_all(&dir).expect("dir");
            let mut data = [
                frame(&record("a", Some(json!(1)))),
                frame(&record("b", Some(json!(2)))),
            ]
            .concat();
            damage(&mut data);
            fs::write(dir.join(file), &data).expect("write");
            let error = Store::open(&dir).err().unwrap_or_default();
            assert!(
                error.contains(&dir.join(file).display().to_string()) && error.contains(expected),
                "{name}: {error}"
            );
            let _ = fs::remove_dir_all(&dir);
        };
        check(
            "flipped",
            &|data| data[10] ^= 1,
            JOURNAL,
            "byte offset 0: checksum mismatch",
        );
        check(
            "huge-length",
            &|data| data[3] = 0xff,
            JOURNAL,
            "byte offset 0: record length",
        );
        check(
            "snapshot-cut",
            &|data| data.truncate(data.len() - 1),
            SNAPSHOT,
            "is damaged at byte offset",
        );
        let second = frame(&record("a", Some(json!(1)))).len();
        check(
            "not-json",
            &|data| {
                let payload = b"{not json}";
                let length = (payload.len() as u32).to_le_bytes();
                let mut bad = Vec::new();
                bad.extend_from_slice(&length);
                bad.extend_from_slice(&checksum(&length, payload).to_le_bytes());
                bad.extend_from_slice(payload);
                data.splice(0..0, bad);
            },
            JOURNAL,
            "byte offset 0: record is not JSON",
        );
        let _ = second;
    }
}
