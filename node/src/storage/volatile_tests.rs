use redb::backends::InMemoryBackend;
use redb::{Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::*;

#[derive(Debug, Clone, Copy)]
enum Op {
    Write(u64, &'static [u8]),
    SetLen(u64),
    Sync,
}

/// Bytes `0..n` of a recognisable pattern.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8 + 1).collect()
}

fn contents(b: &impl StorageBackend) -> Vec<u8> {
    let mut out = vec![0; b.len().expect("len") as usize];
    b.read(0, &mut out).expect("read");
    out
}

/// A backend over an in-memory "disk" holding `initial`.
fn over(initial: &[u8]) -> VolatileBackend<InMemoryBackend> {
    let disk = InMemoryBackend::new();
    disk.set_len(initial.len() as u64).expect("set_len");
    disk.write(0, initial).expect("write");
    VolatileBackend::new(disk).expect("new")
}

/// Expected contents built from pieces: `(offset, bytes)` over `len` zeros.
fn expect(len: usize, pieces: &[(usize, &[u8])]) -> Vec<u8> {
    let mut out = vec![0; len];
    for (at, bytes) in pieces {
        out[*at..at + bytes.len()].copy_from_slice(bytes);
    }
    out
}

/// One table row: (name, disk before, ops, what reads see, what the disk holds).
type Case<'a> = (&'a str, &'a [u8], Vec<Op>, Vec<u8>, Vec<u8>);

#[test]
fn reads_see_the_overlay_and_only_sync_reaches_the_disk() {
    let old = pattern(10_000);
    let cases: Vec<Case> = vec![
        (
            "write unsynced",
            b"",
            vec![Op::Write(0, b"hello")],
            b"hello".to_vec(),
            vec![],
        ),
        (
            "write then sync",
            b"",
            vec![Op::Write(0, b"hello"), Op::Sync],
            b"hello".to_vec(),
            b"hello".to_vec(),
        ),
        (
            "write past the end leaves a zero gap",
            b"ab",
            vec![Op::Write(5000, b"xy")],
            expect(5002, &[(0, b"ab"), (5000, b"xy")]),
            b"ab".to_vec(),
        ),
        (
            "partial page over old data, straddling pages",
            &old,
            vec![Op::Write(4090, b"0123456789")],
            expect(10_000, &[(0, &old), (4090, b"0123456789")]),
            old.clone(),
        ),
        (
            "shrink then grow reads zeros, disk untouched",
            &old,
            vec![Op::SetLen(100), Op::SetLen(10_000)],
            expect(10_000, &[(0, &old[..100])]),
            old.clone(),
        ),
        (
            "shrink then grow then sync",
            &old,
            vec![Op::SetLen(100), Op::SetLen(10_000), Op::Sync],
            expect(10_000, &[(0, &old[..100])]),
            expect(10_000, &[(0, &old[..100])]),
        ),
        (
            "shrink inside a dirty page zeros its tail",
            b"",
            vec![
                Op::Write(0, b"abcdef"),
                Op::SetLen(2),
                Op::SetLen(6),
                Op::Write(5, b"z"),
            ],
            b"ab\0\0\0z".to_vec(),
            vec![],
        ),
        (
            "writes after a sync stay in memory",
            b"",
            vec![Op::Write(0, b"one"), Op::Sync, Op::Write(3, b"two")],
            b"onetwo".to_vec(),
            b"one".to_vec(),
        ),
        (
            "set_len alone is not synced",
            b"abc",
            vec![Op::SetLen(1)],
            b"a".to_vec(),
            b"abc".to_vec(),
        ),
    ];
    for (name, before, ops, seen, on_disk) in cases {
        let v = over(before);
        for op in ops {
            match op {
                Op::Write(at, bytes) => v.write(at, bytes),
                Op::SetLen(n) => v.set_len(n),
                Op::Sync => v.sync_data(),
            }
            .expect(name);
        }
        assert_eq!(contents(&v), seen, "{name}: what reads see");
        assert_eq!(contents(&v.disk), on_disk, "{name}: the disk");
    }
}

#[test]
fn a_read_past_the_end_fails() {
    let v = over(b"abc");
    let mut out = [0; 4];
    assert!(v.read(0, &mut out).is_err());
    v.write(3, b"d").expect("write");
    v.read(0, &mut out).expect("read");
    assert_eq!(&out, b"abcd");
}

#[test]
fn after_a_power_cut_nothing_more_reaches_the_disk() {
    let v = over(b"");
    v.write(0, b"lost").expect("write");
    v.power_cut().cut();
    assert!(v.write(0, b"x").is_err());
    assert!(v.sync_data().is_err());
    assert!(v.len().is_err());
    assert_eq!(contents(&v.disk), b"");
}

#[test]
fn unsynced_writes_are_gone_after_a_crash_and_synced_ones_survive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("f");
    {
        let v = volatile_file(open_file(&path, false).expect("open")).expect("backend");
        v.write(0, &pattern(6000)).expect("write");
        v.sync_data().expect("sync");
        v.write(6000, b"unsynced tail").expect("write");
        v.write(10, b"unsynced overwrite").expect("write");
        assert_eq!(v.len().expect("len"), 6013);
        // The crash: the backend is dropped without a sync.
    }
    assert_eq!(std::fs::read(&path).expect("read"), pattern(6000));

    let f = SyncedFile::open(&path, true, true).expect("open");
    f.write_at(0, b"synced").expect("write");
    f.sync_data().expect("sync");
    f.write_at(6, b", lost").expect("write");
    assert_eq!(f.read_all().expect("read"), b"synced, lost");
    drop(f);
    let f = SyncedFile::open(&path, false, false).expect("reopen");
    assert_eq!(f.read_all().expect("read"), b"synced");
}

const T: TableDefinition<&str, u64> = TableDefinition::new("t");

fn commit(db: &Database, key: &str, durability: Durability) {
    let mut txn = db.begin_write().expect("begin");
    txn.set_durability(durability).expect("durability");
    txn.open_table(T)
        .expect("table")
        .insert(key, 1)
        .expect("insert");
    txn.commit().expect("commit");
}

fn keys(db: &Database) -> Vec<String> {
    let txn = db.begin_read().expect("read");
    let table = txn.open_table(T).expect("table");
    table
        .iter()
        .expect("iter")
        .map(|r| r.expect("row").0.value().to_owned())
        .collect()
}

/// Opens a database at `path` through the volatile backend, with its power-cut handle.
fn volatile_db(path: &Path) -> (Database, PowerCut) {
    let backend = volatile_file(open_file(path, false).expect("open")).expect("backend");
    let cut = backend.power_cut();
    let db = Database::builder()
        .create_with_backend(backend)
        .expect("create");
    (db, cut)
}

/// The negative control: the mode has teeth. A commit redb did not sync is visible until the
/// crash and gone after it; a synced one survives.
#[test]
fn a_redb_commit_without_sync_is_lost_at_a_power_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db.redb");
    let (db, cut) = volatile_db(&path);
    commit(&db, "durable", Durability::Immediate);
    commit(&db, "unsynced", Durability::None);
    assert_eq!(keys(&db), ["durable", "unsynced"], "before the crash");
    cut.cut();
    drop(db);
    let db = Database::create(&path).expect("reopen");
    assert_eq!(keys(&db), ["durable"], "after the crash");
    drop(db);

    // The same with a durable commit after it: then both survive.
    let (db, cut) = volatile_db(&path);
    commit(&db, "unsynced", Durability::None);
    commit(&db, "later", Durability::Immediate);
    cut.cut();
    drop(db);
    let db = create_database(&path, true).expect("reopen");
    assert_eq!(keys(&db), ["durable", "later", "unsynced"]);
}
