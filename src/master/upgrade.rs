//! In-place upgrade of the master (interface; the implementation follows).

use std::path::PathBuf;

use super::Master;
use crate::proto::master::UpgradeAnswer;

impl Master {
    /// An operator's upgrade to `binary` (`None`: the binary the master started from).
    pub(super) fn upgrade(&mut self, _binary: Option<PathBuf>) -> UpgradeAnswer {
        UpgradeAnswer::Refused("not implemented yet".into())
    }
}
