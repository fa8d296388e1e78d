//! The shared store: a PostgreSQL server. (Being written.)

use std::path::Path;

use super::StoreError;

pub struct PostgresStore;

impl PostgresStore {
    pub fn connect(url: &str, _password_file: Option<&Path>) -> Result<PostgresStore, StoreError> {
        Err(StoreError::Unsupported(format!("{url}: not written yet")))
    }
}
