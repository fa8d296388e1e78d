//! The embedded store: SQLite (rusqlite, bundled) in one file. (Being written.)

use std::path::Path;

use super::StoreError;

pub struct SqliteStore;

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        Err(StoreError::Unsupported(format!("{}: not written yet", path.display())))
    }
}
