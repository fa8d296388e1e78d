//! TEMPORARY STUB of the ring API (helper h15-ring writes the real one). Not to be committed.
#![allow(dead_code, unused_variables)]
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};

pub const DEFAULT_RING_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error("io: {0}")]
    Io(io::Error),
    #[error("lapped at {position}, committed {committed}")]
    Lapped { position: u64, committed: u64 },
    #[error("corrupt at {position}: {why}")]
    Corrupt { position: u64, why: &'static str },
    #[error("too large: {len} > {max}")]
    TooLarge { len: usize, max: usize },
    #[error("not a ring: {0}")]
    NotARing(String),
}

pub struct RingWriter {
    memfd: OwnedFd,
    doorbell: OwnedFd,
}
impl RingWriter {
    pub fn create(name: &str, capacity: usize) -> Result<RingWriter, RingError> {
        Err(RingError::NotARing("stub".into()))
    }
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, RingError> {
        Err(RingError::NotARing("stub".into()))
    }
    pub fn head(&self) -> u64 {
        0
    }
    pub fn publish(&mut self) -> bool {
        false
    }
    pub fn ring_doorbell(&self) -> io::Result<()> {
        Ok(())
    }
    pub fn descriptors(&self) -> (BorrowedFd<'_>, BorrowedFd<'_>) {
        use std::os::fd::AsFd;
        (self.memfd.as_fd(), self.doorbell.as_fd())
    }
    pub fn capacity(&self) -> usize {
        0
    }
}
pub struct RingReader {
    doorbell: OwnedFd,
}
impl RingReader {
    pub fn open(memfd: OwnedFd, doorbell: OwnedFd, start: u64) -> Result<RingReader, RingError> {
        Err(RingError::NotARing("stub".into()))
    }
    pub fn doorbell_fd(&self) -> RawFd {
        use std::os::fd::AsRawFd;
        self.doorbell.as_raw_fd()
    }
    pub fn committed(&self) -> u64 {
        0
    }
    pub fn position(&self) -> u64 {
        0
    }
    pub fn capacity(&self) -> usize {
        0
    }
    pub fn next(&mut self, upto: u64, into: &mut Vec<u8>) -> Result<bool, RingError> {
        Ok(false)
    }
}
