//! The engine under the embedded store (redb or fjall), and opening the chosen one.
//!
//! Both keep their files under the same store directory with different names
//! (`telemetry.redb`, `telemetry.fjall/`), so they never clash; opening one where the other's
//! files already exist is refused, naming both, rather than silently starting empty beside
//! the old data. The power-loss fault mode (`storage::volatile`) only wraps redb's file
//! backend, so it is refused with fjall.
//!
//! Not here: choosing between the embedded store and Scylla (`config::storage::Engine`).

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::embedded::{self, EmbeddedOptions, EmbeddedStore};
use super::fjall::{self as fjall_store, FjallStore};
use super::{StorageError, TelemetryStore};

/// The engine of the embedded store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmbeddedBackend {
    /// redb (a B-tree, one file): the default.
    #[default]
    Redb,
    /// fjall (an LSM tree, a directory).
    Fjall,
}

impl EmbeddedBackend {
    /// The name used in configuration and on the command line.
    pub const fn as_str(self) -> &'static str {
        match self {
            EmbeddedBackend::Redb => "redb",
            EmbeddedBackend::Fjall => "fjall",
        }
    }

    /// The file (redb) or directory (fjall) this backend keeps in the store directory.
    pub const fn file_name(self) -> &'static str {
        match self {
            EmbeddedBackend::Redb => embedded::FILE_NAME,
            EmbeddedBackend::Fjall => fjall_store::DIR_NAME,
        }
    }

    fn other(self) -> EmbeddedBackend {
        match self {
            EmbeddedBackend::Redb => EmbeddedBackend::Fjall,
            EmbeddedBackend::Fjall => EmbeddedBackend::Redb,
        }
    }
}

impl std::str::FromStr for EmbeddedBackend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "redb" => Ok(EmbeddedBackend::Redb),
            "fjall" => Ok(EmbeddedBackend::Fjall),
            other => Err(format!(
                "unknown embedded store backend {other:?} (redb or fjall)"
            )),
        }
    }
}

impl std::fmt::Display for EmbeddedBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether `backend` may open a store directory in which the other backend's files exist
/// (`other_exists`), with the power-loss fault mode on or off. Pure.
pub fn check(
    backend: EmbeddedBackend,
    other_exists: bool,
    power_loss: bool,
) -> Result<(), StorageError> {
    if power_loss && backend == EmbeddedBackend::Fjall {
        return Err(StorageError::Invalid {
            field: "storage.embedded.backend",
            problem: "power-loss fault mode is not supported with the fjall backend \
                      (STARLING_FAULT_POWER_LOSS=1 needs backend = \"redb\")"
                .to_owned(),
        });
    }
    if other_exists {
        let other = backend.other();
        return Err(StorageError::Invalid {
            field: "storage.embedded.backend",
            problem: format!(
                "the store directory holds {other} data ({}) but the {backend} backend \
                 ({}) is selected; select backend = \"{other}\" or move the {other} files away",
                other.file_name(),
                backend.file_name()
            ),
        });
    }
    Ok(())
}

/// Opens the embedded store of `dir` on `backend`, after [`check`].
pub fn open(
    dir: &Path,
    backend: EmbeddedBackend,
    options: EmbeddedOptions,
) -> Result<Arc<dyn TelemetryStore>, StorageError> {
    let other_exists = dir.join(backend.other().file_name()).exists();
    check(backend, other_exists, crate::faults::power_loss())?;
    Ok(match backend {
        EmbeddedBackend::Redb => EmbeddedStore::open(dir, options)?,
        EmbeddedBackend::Fjall => FjallStore::open(dir, options)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_table() {
        use EmbeddedBackend::{Fjall, Redb};
        // (backend, other backend's files exist, power loss, refusal mentions)
        let cases = [
            (Redb, false, false, None),
            (Fjall, false, false, None),
            (Redb, false, true, None),
            (
                Fjall,
                false,
                true,
                Some("power-loss fault mode is not supported with the fjall backend"),
            ),
            (Fjall, true, false, Some("holds redb data (telemetry.redb)")),
            (
                Redb,
                true,
                false,
                Some("holds fjall data (telemetry.fjall)"),
            ),
        ];
        for (backend, other, power_loss, refusal) in cases {
            let got = check(backend, other, power_loss);
            match (refusal, got) {
                (None, Ok(())) => {}
                (Some(text), Err(StorageError::Invalid { problem, .. })) => {
                    assert!(problem.contains(text), "{backend} {other}: {problem}");
                }
                (want, got) => panic!("{backend} {other} {power_loss}: {want:?} vs {got:?}"),
            }
        }
    }

    #[test]
    fn names_parse_and_print() {
        for backend in [EmbeddedBackend::Redb, EmbeddedBackend::Fjall] {
            assert_eq!(backend.to_string().parse(), Ok(backend));
        }
        assert!("rocksdb".parse::<EmbeddedBackend>().is_err());
    }

    /// A store directory that holds redb data is refused by fjall, and the redb data is
    /// left alone.
    #[tokio::test(flavor = "multi_thread")]
    async fn fjall_refuses_a_redb_store_directory() {
        let dir = tempfile::tempdir().expect("temp dir");
        let redb = open(
            dir.path(),
            EmbeddedBackend::Redb,
            EmbeddedOptions::default(),
        )
        .expect("redb opens");
        redb.close().await;
        drop(redb);
        let refused = open(
            dir.path(),
            EmbeddedBackend::Fjall,
            EmbeddedOptions::default(),
        );
        assert!(
            matches!(&refused, Err(StorageError::Invalid { problem, .. }) if problem.contains("telemetry.redb")),
            "{:?}",
            refused.err()
        );
        assert!(!dir.path().join(fjall_store::DIR_NAME).exists());
        open(
            dir.path(),
            EmbeddedBackend::Redb,
            EmbeddedOptions::default(),
        )
        .expect("redb again");
    }
}
