use openraft::testing::log_id;
use openraft::{Entry, EntryPayload};
use tempfile::TempDir;

use super::*;

fn entry(term: u64, index: u64) -> RaftEntry {
    Entry {
        log_id: log_id(term, 1, index),
        payload: EntryPayload::Blank,
    }
}

fn frames(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        frame(&mut out, r).expect("frame");
    }
    out
}

#[test]
fn replay_stops_at_the_first_bad_frame() {
    let good = frames(&[Record::Entry(entry(1, 1)), Record::Entry(entry(1, 2))]);
    let first_len = frames(&[Record::Entry(entry(1, 1))]).len();
    let mut flipped = good.clone();
    *flipped.last_mut().expect("bytes") ^= 0x40;
    let mut long_len = good.clone();
    long_len[first_len..first_len + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    // (case, bytes, records kept, valid prefix)
    let cases: &[(&str, Vec<u8>, usize, usize)] = &[
        ("empty", Vec::new(), 0, 0),
        ("two whole frames", good.clone(), 2, good.len()),
        (
            "cut inside the second body",
            good[..good.len() - 3].to_vec(),
            1,
            first_len,
        ),
        (
            "cut inside the second header",
            good[..first_len + 5].to_vec(),
            1,
            first_len,
        ),
        ("checksum mismatch in the second", flipped, 1, first_len),
        ("length beyond the end", long_len, 1, first_len),
        ("garbage only", vec![0xff; 40], 0, 0),
    ];
    for (case, bytes, kept, valid) in cases {
        let (records, at) = replay(bytes);
        assert_eq!((records.len(), at), (*kept, *valid), "{case}");
    }
}

#[test]
fn records_rebuild_the_state_in_order() {
    let mut mem = Mem::default();
    for r in [
        Record::Entry(entry(1, 1)),
        Record::Entry(entry(1, 2)),
        Record::Entry(entry(1, 3)),
        Record::Truncate(3),
        Record::Entry(entry(2, 3)),
        Record::Entry(entry(2, 4)),
        Record::Purge(log_id(1, 1, 1)),
        Record::Committed(Some(log_id(2, 1, 3))),
    ] {
        mem.apply(r);
    }
    let ids: Vec<LogId> = mem.entries.values().map(|e| e.log_id).collect();
    assert_eq!(ids, vec![log_id(1, 1, 2), log_id(2, 1, 3), log_id(2, 1, 4)]);
    assert_eq!(mem.last_purged, Some(log_id(1, 1, 1)));
    assert_eq!(mem.committed, Some(log_id(2, 1, 3)));

    // A compacted journal replays to the same state.
    let (records, _) = replay(&frames(&mem.records()));
    let mut again = Mem::default();
    for r in records {
        again.apply(r);
    }
    assert_eq!(again.entries, mem.entries);
    assert_eq!(again.last_purged, mem.last_purged);
    assert_eq!(again.committed, mem.committed);
}

async fn reopen(dir: &TempDir) -> LogStore {
    let (alive, _) = tokio::sync::mpsc::channel(1);
    LogStore::open(dir.path(), alive).expect("open journal")
}

#[tokio::test]
async fn a_reopened_journal_has_what_was_synced_and_a_torn_tail_is_cut() {
    let dir = TempDir::new().expect("temp dir");
    {
        let mut log = reopen(&dir).await;
        log.queue_entries((1..=5).map(|i| entry(1, i)), None)
            .expect("queue");
        log.truncate(log_id(1, 1, 5)).await.expect("truncate");
        log.queue_entries([entry(2, 5)], None).expect("queue");
        log.purge(log_id(1, 1, 2)).await.expect("purge");
        log.save_vote(&Vote::new(2, 1)).await.expect("vote");
    }
    // A crash in the middle of the next write leaves half a frame.
    let path = dir.path().join(JOURNAL);
    let mut bytes = std::fs::read(&path).expect("read");
    let whole = bytes.len();
    bytes.extend_from_slice(&frames(&[Record::Entry(entry(2, 6))])[..10]);
    std::fs::write(&path, &bytes).expect("write");

    let mut log = reopen(&dir).await;
    let entries = log.try_get_log_entries(0..100).await.expect("read");
    let ids: Vec<LogId> = entries.iter().map(|e| e.log_id).collect();
    assert_eq!(ids, vec![log_id(1, 1, 3), log_id(1, 1, 4), log_id(2, 1, 5)]);
    let state = log.get_log_state().await.expect("state");
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 2)));
    assert_eq!(state.last_log_id, Some(log_id(2, 1, 5)));
    assert_eq!(log.read_vote().await.expect("vote"), Some(Vote::new(2, 1)));
    assert_eq!(std::fs::metadata(&path).expect("meta").len(), whole as u64);
}

#[tokio::test]
async fn compaction_keeps_the_state_and_shrinks_the_file() {
    let dir = TempDir::new().expect("temp dir");
    let path = dir.path().join(JOURNAL);
    let big = {
        let mut log = reopen(&dir).await;
        // Enough entries (with the vote written after each batch) to pass COMPACT_BYTES.
        let mut index = 0;
        while std::fs::metadata(&path).expect("meta").len() <= COMPACT_BYTES {
            log.queue_entries(
                (0..500).map(|_| {
                    index += 1;
                    entry(1, index)
                }),
                None,
            )
            .expect("queue");
            log.save_vote(&Vote::new(1, 1)).await.expect("vote");
        }
        log.purge(log_id(1, 1, index - 10)).await.expect("purge");
        // The compaction runs after the purge's sync; a later synced write orders after it.
        log.save_vote(&Vote::new(1, 1)).await.expect("vote");
        index
    };
    assert!(std::fs::metadata(&path).expect("meta").len() < COMPACT_BYTES / 10);
    let mut log = reopen(&dir).await;
    let entries = log.try_get_log_entries(0..u64::MAX).await.expect("read");
    assert_eq!(entries.len(), 10);
    assert_eq!(entries.last().map(|e| e.log_id.index), Some(big));
    let state = log.get_log_state().await.expect("state");
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, big - 10)));
}
