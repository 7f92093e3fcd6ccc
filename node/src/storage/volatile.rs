//! The power-loss fault mode's storage (`STARLING_FAULT_POWER_LOSS=1`, see `faults`): files
//! whose writes not yet synced live only in this process's memory, so a SIGKILL loses exactly
//! what a power cut would lose. SIGKILL alone proves nothing about fsync: the kernel's page
//! cache keeps every `write` of a killed process.
//!
//! - [`VolatileBackend`]: a [`redb::StorageBackend`] over another backend (the file): `write`
//!   and `set_len` go to a dirty-page overlay that reads see; only `sync_data` writes the
//!   overlay to the file and syncs it.
//! - [`SyncedFile`]: the same for an append-only file (the Raft journal), or the plain file
//!   when the mode is off.
//! - [`create_database`]: opens a redb database through a [`VolatileBackend`] when the mode
//!   is on, as `Database::create` otherwise.
//!
//! What it does not do: metadata (create, rename, unlink, directory fsync) takes effect at
//! once, as if the directory were always synced; a sync is not atomic (a kill during one
//! leaves a prefix of its pages written, as a real torn write may); even a clean exit loses
//! what was not synced (as a power cut right after it would).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use redb::backends::FileBackend;
use redb::{BackendError, Database, DatabaseError, StorageBackend};

/// The overlay's unit: a write dirties the whole pages it touches.
const PAGE: u64 = 4096;

/// What the file looks like to this process, beyond what is on disk.
#[derive(Debug)]
struct Overlay {
    /// The length reads and `len` see.
    len: u64,
    /// The file's length on disk (as of the last sync).
    disk_len: u64,
    /// Disk bytes at or past this offset read as zeros: a shrink since the last sync cut them
    /// (a later growth must read zeros there). Never above `len`.
    zero_from: u64,
    /// Page index → the page's current contents (`PAGE` bytes; zeros past `len`).
    pages: BTreeMap<u64, Box<[u8]>>,
}

/// A handle that cuts the power of one [`VolatileBackend`]: its unsynced writes are dropped
/// and every later write, read or sync fails, so nothing more reaches the file, whatever its
/// owner does on the way down (a redb `Database` writes and syncs when dropped). For tests
/// that simulate a crash in process.
#[derive(Debug, Clone)]
pub struct PowerCut(Arc<AtomicBool>);

impl PowerCut {
    /// Cuts the power.
    pub fn cut(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A storage backend that keeps unsynced writes in memory (see the module docs).
#[derive(Debug)]
pub struct VolatileBackend<D: StorageBackend = FileBackend> {
    disk: D,
    overlay: Mutex<Overlay>,
    cut: Arc<AtomicBool>,
}

fn power_cut() -> io::Error {
    io::Error::other("power cut (fault injection): the storage is gone")
}

impl<D: StorageBackend> VolatileBackend<D> {
    /// Wraps `disk`, whose current contents are taken as synced.
    pub fn new(disk: D) -> io::Result<Self> {
        let len = disk.len()?;
        Ok(Self {
            disk,
            overlay: Mutex::new(Overlay {
                len,
                disk_len: len,
                zero_from: len,
                pages: BTreeMap::new(),
            }),
            cut: Arc::new(AtomicBool::new(false)),
        })
    }

    /// A handle to simulate a power cut on this backend.
    pub fn power_cut(&self) -> PowerCut {
        PowerCut(self.cut.clone())
    }

    /// The overlay, or an error once the power is cut (when the overlay is dropped).
    fn overlay(&self) -> io::Result<std::sync::MutexGuard<'_, Overlay>> {
        let mut o = self.overlay.lock().unwrap_or_else(PoisonError::into_inner);
        if self.cut.load(Ordering::SeqCst) {
            o.pages.clear();
            return Err(power_cut());
        }
        Ok(o)
    }

    /// Reads `out.len()` bytes at `offset` of what is on disk, as this process sees it: disk
    /// bytes below `zero_from`, zeros past it. The caller checks the range against `len`.
    fn read_disk(&self, o: &Overlay, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let end = offset + out.len() as u64;
        let from_disk = end.min(o.zero_from).saturating_sub(offset) as usize;
        if from_disk > 0 {
            self.disk.read(offset, &mut out[..from_disk])?;
        }
        out[from_disk..].fill(0);
        Ok(())
    }
}

impl<D: StorageBackend> StorageBackend for VolatileBackend<D> {
    fn len(&self) -> io::Result<u64> {
        Ok(self.overlay()?.len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let o = self.overlay()?;
        if offset + out.len() as u64 > o.len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("read of {} bytes at {offset} past the end", out.len()),
            ));
        }
        let mut done = 0;
        while done < out.len() {
            let at = offset + done as u64;
            let (page, within) = (at / PAGE, (at % PAGE) as usize);
            let n = (PAGE as usize - within).min(out.len() - done);
            let chunk = &mut out[done..done + n];
            match o.pages.get(&page) {
                Some(p) => chunk.copy_from_slice(&p[within..within + n]),
                None => self.read_disk(&o, at, chunk)?,
            }
            done += n;
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut o = self.overlay()?;
        if len < o.len {
            o.zero_from = o.zero_from.min(len);
            let first_gone = len.div_ceil(PAGE);
            o.pages.split_off(&first_gone);
            if !len.is_multiple_of(PAGE)
                && let Some(p) = o.pages.get_mut(&(len / PAGE))
            {
                p[(len % PAGE) as usize..].fill(0);
            }
        }
        o.len = len;
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut o = self.overlay()?;
        if o.zero_from < o.disk_len {
            self.disk.set_len(o.zero_from)?;
        }
        // The disk is now `zero_from` long.
        if o.len != o.zero_from {
            self.disk.set_len(o.len)?;
        }
        for (&page, bytes) in &o.pages {
            let at = page * PAGE;
            let n = (o.len - at).min(PAGE) as usize;
            self.disk.write(at, &bytes[..n])?;
        }
        self.disk.sync_data()?;
        o.disk_len = o.len;
        o.zero_from = o.len;
        o.pages.clear();
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut o = self.overlay()?;
        let end = offset + data.len() as u64;
        if end > o.len {
            // As `pwrite` past the end: the file grows, the gap reads as zeros.
            o.len = end;
        }
        let mut done = 0;
        while done < data.len() {
            let at = offset + done as u64;
            let (page, within) = (at / PAGE, (at % PAGE) as usize);
            let n = (PAGE as usize - within).min(data.len() - done);
            if !o.pages.contains_key(&page) {
                let mut fresh = vec![0; PAGE as usize].into_boxed_slice();
                self.read_disk(&o, page * PAGE, &mut fresh)?;
                o.pages.insert(page, fresh);
            }
            let p = o.pages.get_mut(&page).expect("inserted above");
            p[within..within + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
        Ok(())
    }

    fn close(&self) -> io::Result<()> {
        // Unsynced writes are dropped here too: that is the mode.
        self.disk.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.disk.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.disk.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.disk.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.disk.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.disk.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.disk.query_lock_range(start, end)
    }
}

/// Opens `path` read-write, creating it if needed, as redb does.
fn open_file(path: &Path, truncate: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(truncate)
        .open(path)
}

/// A file backend over `file` with unsynced writes kept in memory.
fn volatile_file(file: File) -> io::Result<VolatileBackend> {
    VolatileBackend::new(FileBackend::new(file).map_err(io::Error::other)?)
}

/// Opens or creates the redb database at `path`; with `power_loss`, through a
/// [`VolatileBackend`] (see the module docs).
pub fn create_database(path: &Path, power_loss: bool) -> Result<Database, DatabaseError> {
    if !power_loss {
        return Database::create(path);
    }
    let backend = volatile_file(open_file(path, false)?)?;
    Database::builder().create_with_backend(backend)
}

/// A file written at offsets and synced: the plain file, or (power-loss mode) one whose
/// unsynced writes live in memory.
#[derive(Debug)]
pub enum SyncedFile {
    /// Every write reaches the kernel at once.
    Direct(File),
    /// Writes reach the file at the next sync.
    Volatile(VolatileBackend),
}

impl SyncedFile {
    /// Opens `path` read-write, creating it if needed and emptying it when `truncate`.
    pub fn open(path: &Path, truncate: bool, power_loss: bool) -> io::Result<Self> {
        let file = open_file(path, truncate)?;
        Ok(match power_loss {
            false => SyncedFile::Direct(file),
            true => SyncedFile::Volatile(volatile_file(file)?),
        })
    }

    /// The whole contents.
    pub fn read_all(&self) -> io::Result<Vec<u8>> {
        let mut out = vec![0; usize::try_from(self.size()?).map_err(io::Error::other)?];
        match self {
            SyncedFile::Direct(f) => std::os::unix::fs::FileExt::read_exact_at(f, &mut out, 0)?,
            SyncedFile::Volatile(v) => v.read(0, &mut out)?,
        }
        Ok(out)
    }

    /// The length.
    pub fn size(&self) -> io::Result<u64> {
        match self {
            SyncedFile::Direct(f) => Ok(f.metadata()?.len()),
            SyncedFile::Volatile(v) => v.len(),
        }
    }

    /// Writes all of `data` at `offset`.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        match self {
            SyncedFile::Direct(f) => std::os::unix::fs::FileExt::write_all_at(f, data, offset),
            SyncedFile::Volatile(v) => v.write(offset, data),
        }
    }

    /// Cuts or extends (with zeros) the file to `len`.
    pub fn set_len(&self, len: u64) -> io::Result<()> {
        match self {
            SyncedFile::Direct(f) => f.set_len(len),
            SyncedFile::Volatile(v) => v.set_len(len),
        }
    }

    /// `fdatasync` (for the plain file); the overlay written out and synced (volatile).
    pub fn sync_data(&self) -> io::Result<()> {
        match self {
            SyncedFile::Direct(f) => f.sync_data(),
            SyncedFile::Volatile(v) => v.sync_data(),
        }
    }
}

#[cfg(test)]
#[path = "volatile_tests.rs"]
mod tests;
