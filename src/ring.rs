//! A room's broadcast ring: one writer (the broker) appends records to a sealed memfd that many
//! readers (the sessions) map read-only, and an eventfd doorbell tells them something is new.
//!
//! It owns the mechanism only: the shared layout, the memory-ordering discipline, the seals
//! and the doorbell. It knows nothing of chat, frames or bincode (a record is bytes), decides
//! nothing about a reader that fell behind (it reports [`RingError::Lapped`]; the session
//! tells its client and leaves), and never waits for a reader: the writer overwrites.
//!
//! # Layout
//!
//! A memfd of a 4096-byte header page followed by `capacity` data bytes (a power of two). The
//! header's first four 8-byte words are: magic, capacity, `reserve` (the end of the bytes the
//! writer has started writing) and `commit` (the end of the bytes readers may read). Positions
//! are byte counts since the ring was made and only grow; the byte at position `p` lives at
//! `data[p % capacity]`. A record starts at an 8-aligned position: a word holding its own
//! position, a word holding its payload length (upper half zero), then the payload, padded with
//! zeroes to 8 bytes. A record may straddle the end of the data region.
//!
//! # Why a reader never shows a torn record
//!
//! Every shared byte is read and written as an `AtomicU64` word (so a reader racing the writer
//! is not undefined behaviour, merely a stale or mixed copy), ordered by fences, as a seqlock:
//!
//! - The writer, before it writes a record's words, stores `reserve` = the record's end
//!   (Relaxed) and issues a Release fence. It publishes by storing `commit` (Release).
//! - A reader loads `commit` (Relaxed, then an Acquire fence: synchronises with the publishing
//!   store, so every word of every record before `commit` is visible), copies a record's words
//!   out, issues an Acquire fence, then loads `reserve` (Relaxed).
//! - If any word the reader copied was written by a later record (one that overwrites this
//!   one), that write came after the writer's Release fence, so the fences synchronise and the
//!   reader's load of `reserve` sees at least that later record's end: `reserve` >
//!   `position + capacity`. Conversely, if `reserve` ≤ `position + capacity` after the copy, no
//!   word of `[position, position + capacity)` had been overwritten: the copy is the record as
//!   it was committed. So the check comes after the copy (a check before it proves nothing
//!   about the copy), and the record's header — its position and length — is believed only
//!   after the check: before it, the length is used only to bound how much is copied.
//!
//! A reader whose position is more than `capacity` behind `commit` is lapped before it reads.
//! A header that fails its checks after a clean copy is [`RingError::Corrupt`]: the writer
//! never writes one, and no bytes make a reader panic or read out of bounds.
//!
//! Readers map the data read-only and use only Relaxed loads there, which Rust's atomics allow
//! on read-only memory (register-sized, `Relaxed`); the Acquire is a separate fence.
//!
//! # What a session can and cannot do to its ring
//!
//! The writer maps the memfd read-write, then seals it with `F_SEAL_SHRINK | F_SEAL_GROW |
//! F_SEAL_FUTURE_WRITE | F_SEAL_SEAL`: its own mapping stays writable, but from then on nobody
//! can map it writable, `write(2)` it, resize it or remove the seals. A reader refuses a memfd
//! without those seals, so a broker bug cannot hand out a writable ring either.
//!
//! The doorbell is another matter: an eventfd cannot be handed out write-only or poll-only,
//! so a member can read it, and a read that empties the counter between the broker's write and
//! another member's `epoll_wait` makes that member's poller skip the edge (epoll re-checks the
//! counter before reporting it). A hostile member can therefore delay others' wake-ups, never
//! forge or hide a record: a reader must not rely on the doorbell alone to learn that the ring
//! moved (anything else that wakes it, a socket frame with its ring mark above all, is a
//! reason to look at [`RingReader::committed`]).

use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering, fence};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};

/// A room's ring size unless configured otherwise.
pub const DEFAULT_RING_BYTES: usize = 1 << 20;
/// The smallest data region (a request for less is rounded up).
pub const MIN_RING_BYTES: usize = 64 * 1024;
/// The largest data region (a session's address-space limit makes room for two rings of the
/// configured size: `master::children::session_address_space`).
pub const MAX_RING_BYTES: usize = 1 << 28;

/// The header page in front of the data region.
pub(crate) const HEADER_BYTES: usize = 4096;
const MAGIC: u64 = u64::from_le_bytes(*b"chatdrg1");
const MAGIC_WORD: usize = 0;
const CAPACITY_WORD: usize = 1;
const RESERVE_WORD: usize = 2;
const COMMIT_WORD: usize = 3;
/// A record's own position and its length, in front of its payload.
const RECORD_HEADER_BYTES: u64 = 16;
const WORD: u64 = 8;

/// The seals a reader insists on.
fn seals_readers_need() -> SealFlag {
    SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_FUTURE_WRITE
}

/// What went wrong with a ring.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    /// A system call failed (`context` says which step).
    #[error("{context}: {source}")]
    Io { context: &'static str, source: io::Error },
    /// The writer overwrote (or is overwriting) the record at `position`; `committed` is how
    /// far it had got. The reader is too slow: nothing it could read there can be trusted.
    #[error("lapped: reading at {position}, the writer is at {committed}")]
    Lapped { position: u64, committed: u64 },
    /// The record at `position` was copied whole but is not one the writer wrote.
    #[error("corrupt record at {position}: {why}")]
    Corrupt { position: u64, why: &'static str },
    /// A payload (or a ring) larger than allowed; nothing was appended (or made).
    #[error("{len} bytes is more than a ring takes ({max})")]
    TooLarge { len: usize, max: usize },
    /// The memfd handed over is not a sealed ring: wrong size, magic or seals.
    #[error("not a ring: {0}")]
    NotARing(String),
}

fn io_error(context: &'static str) -> impl FnOnce(Errno) -> RingError {
    move |errno| RingError::Io { context, source: errno.into() }
}

/// Bytes a record with a payload of `len` bytes takes, padding included.
fn record_bytes(len: u64) -> u64 {
    RECORD_HEADER_BYTES + len.div_ceil(WORD) * WORD
}

/// A shared mapping of a ring: the header's words, then the data region's.
#[derive(Debug)]
struct Mapping {
    base: NonNull<AtomicU64>,
    /// Bytes mapped: the header page and the data region.
    len: usize,
    /// Data bytes (a power of two).
    capacity: u64,
}

impl Mapping {
    /// Maps `memfd` (header and data) shared, with `prot`.
    fn new(memfd: BorrowedFd<'_>, capacity: usize, prot: ProtFlags) -> Result<Mapping, RingError> {
        let len = HEADER_BYTES + capacity;
        let length = NonZeroUsize::new(len).ok_or(RingError::NotARing("empty".into()))?;
        // SAFETY: a fresh mapping chosen by the kernel (no address given) aliases no Rust
        // object; the file is at least `len` bytes (the caller created or checked it, and it
        // is sealed against shrinking), so no access within the mapping faults.
        let base = unsafe { mmap(None, length, prot, MapFlags::MAP_SHARED, memfd, 0) }
            .map_err(io_error("mmap the ring"))?;
        Ok(Mapping { base: base.cast(), len, capacity: capacity as u64 })
    }

    fn header(&self, word: usize) -> &AtomicU64 {
        debug_assert!(word < HEADER_BYTES / 8);
        // SAFETY: the header page is mapped for the life of `self`, the base is page-aligned
        // and `word` is within the page; the memory is only ever accessed as atomics.
        unsafe { &*self.base.as_ptr().add(word) }
    }

    /// The data word holding position `position` (8-aligned).
    fn data(&self, position: u64) -> &AtomicU64 {
        let index = ((position & (self.capacity - 1)) / WORD) as usize;
        // SAFETY: `index` < capacity / 8 (capacity is a power of two), so the word is inside
        // the data region after the header page, mapped for the life of `self` and only ever
        // accessed as atomics.
        unsafe { &*self.base.as_ptr().add(HEADER_BYTES / 8 + index) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: this is the mapping `Mapping::new` made, and every reference into it borrows
        // `self`, so none outlives it.
        let _ = unsafe { munmap(self.base.cast(), self.len) };
    }
}

/// The broker's end of a ring.
#[derive(Debug)]
pub struct RingWriter {
    map: Mapping,
    memfd: OwnedFd,
    doorbell: OwnedFd,
    /// Where the next record starts.
    head: u64,
    /// What `commit` says.
    published: u64,
}

impl RingWriter {
    /// Makes a ring of `capacity` data bytes (rounded up to a power of two, at least
    /// [`MIN_RING_BYTES`]) and its doorbell, and seals the memfd.
    pub fn create(name: &str, capacity: usize) -> Result<RingWriter, RingError> {
        let capacity = match capacity.max(MIN_RING_BYTES).checked_next_power_of_two() {
            Some(bytes) if bytes <= MAX_RING_BYTES => bytes,
            _ => return Err(RingError::TooLarge { len: capacity, max: MAX_RING_BYTES }),
        };
        let memfd = memfd_create(name, MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)
            .map_err(io_error("memfd_create"))?;
        nix::unistd::ftruncate(&memfd, (HEADER_BYTES + capacity) as i64)
            .map_err(io_error("size the ring"))?;
        let map =
            Mapping::new(memfd.as_fd(), capacity, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE)?;
        map.header(MAGIC_WORD).store(MAGIC, Ordering::Relaxed);
        map.header(CAPACITY_WORD).store(capacity as u64, Ordering::Relaxed);
        let seals = seals_readers_need() | SealFlag::F_SEAL_SEAL;
        fcntl(&memfd, FcntlArg::F_ADD_SEALS(seals)).map_err(io_error("seal the ring"))?;
        let doorbell =
            EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                .map_err(io_error("eventfd"))?;
        Ok(RingWriter { map, memfd, doorbell: doorbell.into(), head: 0, published: 0 })
    }

    /// The most payload bytes one record may carry.
    fn max_payload(&self) -> usize {
        self.capacity() / 4
    }

    /// Appends one record (not visible until [`RingWriter::publish`]); returns its position.
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, RingError> {
        if payload.len() > self.max_payload() {
            return Err(RingError::TooLarge { len: payload.len(), max: self.max_payload() });
        }
        let position = self.head;
        let end = position + record_bytes(payload.len() as u64);
        // Readers that see any word below come to see this reserve (module docs).
        self.map.header(RESERVE_WORD).store(end, Ordering::Relaxed);
        fence(Ordering::Release);
        self.map.data(position).store(position, Ordering::Relaxed);
        self.map.data(position + WORD).store(payload.len() as u64, Ordering::Relaxed);
        let mut at = position + RECORD_HEADER_BYTES;
        let mut chunks = payload.chunks_exact(WORD as usize);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.map.data(at).store(u64::from_ne_bytes(word), Ordering::Relaxed);
            at += WORD;
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.map.data(at).store(u64::from_ne_bytes(word), Ordering::Relaxed);
        }
        self.head = end;
        Ok(position)
    }

    /// Where the next record starts (unpublished records counted).
    pub fn head(&self) -> u64 {
        self.head
    }

    /// Whether records were appended since the last [`RingWriter::publish`].
    pub fn has_unpublished(&self) -> bool {
        self.head != self.published
    }

    /// Makes everything appended visible; true if anything was new since the last call.
    pub fn publish(&mut self) -> bool {
        if self.head == self.published {
            return false;
        }
        self.map.header(COMMIT_WORD).store(self.head, Ordering::Release);
        self.published = self.head;
        true
    }

    /// Rings the doorbell once. A counter nobody reads saturates only after 2^64 - 2 rings;
    /// then it is read back to zero and written again.
    pub fn ring_doorbell(&self) -> io::Result<()> {
        let one = 1u64.to_ne_bytes();
        loop {
            match nix::unistd::write(&self.doorbell, &one) {
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => {
                    let mut counter = [0u8; 8];
                    match nix::unistd::read(&self.doorbell, &mut counter) {
                        Ok(_) | Err(Errno::EAGAIN) | Err(Errno::EINTR) => {}
                        Err(errno) => return Err(errno.into()),
                    }
                }
                Err(errno) => return Err(errno.into()),
            }
        }
    }

    /// What a member is handed: (memfd, doorbell).
    pub fn descriptors(&self) -> (BorrowedFd<'_>, BorrowedFd<'_>) {
        (self.memfd.as_fd(), self.doorbell.as_fd())
    }

    /// Data bytes.
    pub fn capacity(&self) -> usize {
        self.map.capacity as usize
    }

    /// Writes `word` at `position` behind the ring's back, as a bug or a hostile writer
    /// would (tests only).
    #[cfg(test)]
    fn scribble(&self, position: u64, word: u64) {
        self.map.data(position).store(word, Ordering::Relaxed);
    }
}

/// A session's end of a ring: a read-only mapping, a position, and the doorbell.
#[derive(Debug)]
pub struct RingReader {
    map: Mapping,
    doorbell: OwnedFd,
    /// Where the next record starts.
    position: u64,
}

impl RingReader {
    /// Maps a ring handed over by the broker, read-only, after checking that it is one: sealed
    /// (`SHRINK | GROW | FUTURE_WRITE`), of a size that fits its header's capacity, with the
    /// magic. Reads from `start` on (a record boundary). `memfd` is closed once mapped.
    pub fn open(memfd: OwnedFd, doorbell: OwnedFd, start: u64) -> Result<RingReader, RingError> {
        // Seals first: once they hold, the size checked next cannot change.
        let seals = fcntl(&memfd, FcntlArg::F_GET_SEALS)
            .map_err(|errno| RingError::NotARing(format!("no seals to read ({errno})")))?;
        let seals = SealFlag::from_bits_truncate(seals);
        if !seals.contains(seals_readers_need()) {
            return Err(RingError::NotARing(format!("not sealed against writes ({seals:?})")));
        }
        let stat = nix::sys::stat::fstat(&memfd).map_err(io_error("fstat the ring"))?;
        let capacity = usize::try_from(stat.st_size)
            .ok()
            .and_then(|size| size.checked_sub(HEADER_BYTES))
            .filter(|&bytes| {
                bytes.is_power_of_two() && (MIN_RING_BYTES..=MAX_RING_BYTES).contains(&bytes)
            })
            .ok_or_else(|| RingError::NotARing(format!("{} bytes", stat.st_size)))?;
        let map = Mapping::new(memfd.as_fd(), capacity, ProtFlags::PROT_READ)?;
        drop(memfd);
        if map.header(MAGIC_WORD).load(Ordering::Relaxed) != MAGIC {
            return Err(RingError::NotARing("wrong magic".into()));
        }
        let stated = map.header(CAPACITY_WORD).load(Ordering::Relaxed);
        if stated != capacity as u64 {
            return Err(RingError::NotARing(format!("{stated} bytes stated, {capacity} mapped")));
        }
        if !start.is_multiple_of(WORD) {
            return Err(RingError::Corrupt {
                position: start,
                why: "start is not a record boundary",
            });
        }
        Ok(RingReader { map, doorbell, position: start })
    }

    /// The doorbell, for registering with a poller (edge-triggered; never read).
    pub fn doorbell_fd(&self) -> RawFd {
        self.doorbell.as_raw_fd()
    }

    /// How far readers may read now.
    pub fn committed(&self) -> u64 {
        let committed = self.map.header(COMMIT_WORD).load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        committed
    }

    /// Where the next record starts.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Bytes of the ring's data region.
    pub fn capacity(&self) -> usize {
        self.map.capacity as usize
    }

    /// Copies the next record's payload into `into` (cleared first; its capacity is reused)
    /// and moves on, if it starts before `upto` (and before `commit`); `Ok(false)` if not.
    /// [`RingError::Lapped`] and [`RingError::Corrupt`] leave the position where it was and
    /// `into` empty.
    pub fn next(&mut self, upto: u64, into: &mut Vec<u8>) -> Result<bool, RingError> {
        self.next_checked(upto, into, || {})
    }

    /// [`RingReader::next`], with `after_copy` run between the copy and the check that the
    /// copy was not overwritten (tests overwrite the record there).
    fn next_checked(
        &mut self,
        upto: u64,
        into: &mut Vec<u8>,
        after_copy: impl FnOnce(),
    ) -> Result<bool, RingError> {
        into.clear();
        let committed = self.committed();
        let position = self.position;
        if position >= upto.min(committed) {
            return Ok(false);
        }
        let capacity = self.map.capacity;
        if committed - position > capacity {
            return Err(RingError::Lapped { position, committed });
        }
        let room = committed - position;
        if room < RECORD_HEADER_BYTES {
            return Err(RingError::Corrupt { position, why: "no whole record before the commit" });
        }
        let stored_position = self.map.data(position).load(Ordering::Relaxed);
        let stated_length = self.map.data(position + WORD).load(Ordering::Relaxed);
        let max_payload = capacity / 4;
        // Not believed yet: only bounds the copy.
        let copied = stated_length.min(max_payload).min(room - RECORD_HEADER_BYTES) as usize;
        // Filled a word at a time into the buffer's spare room: neither a call per word nor
        // zeroing first (both showed in the profile).
        into.reserve(copied);
        let mut at = position + RECORD_HEADER_BYTES;
        for chunk in into.spare_capacity_mut()[..copied].chunks_mut(WORD as usize) {
            let word = self.map.data(at).load(Ordering::Relaxed).to_ne_bytes();
            for (slot, byte) in chunk.iter_mut().zip(word) {
                slot.write(byte);
            }
            // Wrapping: `commit` is the writer's word, and a garbage one near 2^64 must not
            // make this overflow (positions this large are never reached honestly).
            at = at.wrapping_add(WORD);
        }
        // SAFETY: the loop above wrote each of the first `copied` bytes of the spare room
        // (`reserve` made at least that much), and `into` was empty.
        unsafe { into.set_len(copied) };
        after_copy();
        fence(Ordering::Acquire);
        let reserve = self.map.header(RESERVE_WORD).load(Ordering::Relaxed);
        if reserve > position.saturating_add(capacity) {
            into.clear();
            return Err(RingError::Lapped { position, committed: reserve });
        }
        let why = if stored_position != position {
            Some("the record names another position")
        } else if stated_length > max_payload {
            Some("the record's length is past the limit")
        } else if record_bytes(stated_length) > room {
            Some("the record runs past the commit")
        } else {
            None
        };
        if let Some(why) = why {
            into.clear();
            return Err(RingError::Corrupt { position, why });
        }
        self.position = position + record_bytes(stated_length);
        Ok(true)
    }

    /// The mapping's first byte and length (tests try to make it writable).
    #[cfg(test)]
    fn mapping(&self) -> (NonNull<std::ffi::c_void>, usize) {
        (self.map.base.cast(), self.map.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fd_passing::tests::passed_through_a_socket;

    /// A payload that says which record it is, `len` bytes long.
    fn payload(index: usize, len: usize) -> Vec<u8> {
        (0..len).map(|at| (index * 31 + at * 7) as u8).collect()
    }

    fn reader_of(writer: &RingWriter, start: u64) -> RingReader {
        let (memfd, doorbell) = writer.descriptors();
        let memfd = memfd.try_clone_to_owned().expect("dup");
        let doorbell = doorbell.try_clone_to_owned().expect("dup");
        RingReader::open(memfd, doorbell, start).expect("a ring")
    }

    /// Every record the reader can read now.
    fn drain(reader: &mut RingReader) -> Vec<Vec<u8>> {
        let mut seen = Vec::new();
        let mut record = Vec::new();
        while reader.next(u64::MAX, &mut record).expect("a record") {
            seen.push(record.clone());
        }
        seen
    }

    #[test]
    fn records_of_every_size_come_back_whole_across_many_wraps() {
        let mut writer = RingWriter::create("test", 1).expect("ring");
        assert_eq!(writer.capacity(), MIN_RING_BYTES);
        let mut reader = reader_of(&writer, 0);
        let mut index = 0;
        let mut record = Vec::new();
        while writer.head() < 10 * writer.capacity() as u64 {
            // Batches of up to 20 records between publishes, well inside one capacity.
            let batch: Vec<Vec<u8>> =
                (0..index % 20 + 1).map(|k| payload(index + k, (index + k) * 37 % 3001)).collect();
            for sent in &batch {
                writer.append(sent).expect("fits");
            }
            index += batch.len();
            assert!(writer.publish());
            for sent in &batch {
                assert!(reader.next(u64::MAX, &mut record).expect("a record"));
                assert_eq!(&record, sent);
            }
            assert!(!reader.next(u64::MAX, &mut record).expect("nothing more"));
            assert_eq!(reader.position(), writer.head());
        }
        // The buffer grew to the largest record and no further: no allocation per record.
        let kept = record.capacity();
        assert!((3000..2 * 3001).contains(&kept), "{kept}");
    }

    #[test]
    fn nothing_is_visible_before_publish_and_marks_stop_a_reader() {
        let mut writer = RingWriter::create("test", DEFAULT_RING_BYTES).expect("ring");
        let mut reader = reader_of(&writer, 0);
        let first = writer.append(b"one").expect("fits");
        let second = writer.append(b"two").expect("fits");
        assert_eq!((first, second), (0, 24));
        assert_eq!(reader.committed(), 0);
        assert!(drain(&mut reader).is_empty());
        assert!(writer.publish());
        assert!(!writer.publish(), "nothing new");
        assert_eq!(reader.committed(), 48);
        let mut record = Vec::new();
        // A mark at the second record: the first only.
        assert!(reader.next(second, &mut record).expect("first"));
        assert_eq!(record, b"one");
        assert!(!reader.next(second, &mut record).expect("stops at the mark"));
        assert_eq!(drain(&mut reader), vec![b"two".to_vec()]);
    }

    #[test]
    fn a_reader_started_at_the_head_sees_only_later_records() {
        let mut writer = RingWriter::create("test", DEFAULT_RING_BYTES).expect("ring");
        writer.append(b"before").expect("fits");
        writer.publish();
        writer.append(b"unpublished, before").expect("fits");
        let mut reader = reader_of(&writer, writer.head());
        writer.append(b"after").expect("fits");
        writer.publish();
        assert_eq!(drain(&mut reader), vec![b"after".to_vec()]);
    }

    #[test]
    fn a_lapped_reader_is_told_so_and_never_shown_a_torn_record() {
        let mut writer = RingWriter::create("test", 1).expect("ring");
        let mut reader = reader_of(&writer, 0);
        let big = payload(1, 1000);
        while writer.head() <= writer.capacity() as u64 + 100 {
            writer.append(&big).expect("fits");
        }
        writer.publish();
        let mut record = b"left over".to_vec();
        let err = reader.next(u64::MAX, &mut record).expect_err("lapped");
        assert!(matches!(err, RingError::Lapped { position: 0, .. }), "{err:?}");
        assert!(record.is_empty());
        assert_eq!(reader.position(), 0);
    }

    #[test]
    fn a_record_overwritten_while_it_is_copied_is_lapped_not_shown() {
        let mut writer = RingWriter::create("test", 1).expect("ring");
        let mut reader = reader_of(&writer, 0);
        writer.append(&payload(0, 500)).expect("fits");
        writer.publish();
        let mut record = Vec::new();
        // Between the copy and the check the writer laps the record (not yet published: the
        // reserve alone says so).
        let err = reader
            .next_checked(u64::MAX, &mut record, || {
                while writer.head() <= writer.capacity() as u64 {
                    writer.append(&payload(9, 4000)).expect("fits");
                }
            })
            .expect_err("overwritten");
        assert!(matches!(err, RingError::Lapped { position: 0, .. }), "{err:?}");
        assert!(record.is_empty());
        // Just short of the record is not lapped: the check is exact.
        let mut writer = RingWriter::create("test", 1).expect("ring");
        let mut reader = reader_of(&writer, 0);
        writer.append(&payload(0, 8)).expect("fits");
        writer.publish();
        let capacity = writer.capacity() as u64;
        reader
            .next_checked(u64::MAX, &mut record, || {
                while writer.head() < capacity {
                    let left = capacity - writer.head() - RECORD_HEADER_BYTES;
                    let len = left.min(capacity / 4) as usize;
                    writer.append(&payload(1, len)).expect("fits");
                }
                assert_eq!(writer.head(), capacity);
            })
            .expect("intact");
        assert_eq!(record, payload(0, 8));
    }

    /// Record `index`'s payload: its index, then bytes that depend on it and their place, so
    /// that any mix of two records fails [`is_whole`].
    fn numbered(index: u64) -> Vec<u8> {
        let len = 8 + (index * 13 % 500) as usize;
        let mut bytes = index.to_ne_bytes().to_vec();
        bytes.extend((8..len).map(|at| (index as usize * 7 + at) as u8));
        bytes
    }

    /// The index of a payload made by [`numbered`], if it is one whole.
    fn is_whole(bytes: &[u8]) -> Option<u64> {
        let index = u64::from_ne_bytes(bytes.get(..8)?.try_into().ok()?);
        (numbered(index) == bytes).then_some(index)
    }

    /// A reader racing a writer sees whole records in order, or is told it was lapped; how
    /// often is the scheduler's. Then, the race over and the reader caught up, what the
    /// writer appends is read whole, every record: a liveness check that no load can break.
    #[test]
    fn a_reader_racing_the_writer_sees_whole_records_in_order_or_is_lapped() {
        use std::sync::atomic::AtomicBool;
        use std::sync::{Arc, Barrier};
        const RACED: u64 = 30_000;
        const CALM: u64 = 10;
        let mut writer = RingWriter::create("race", 1).expect("ring");
        let (memfd, doorbell) = writer.descriptors();
        let memfd = memfd.try_clone_to_owned().expect("dup");
        let doorbell = doorbell.try_clone_to_owned().expect("dup");
        let done = Arc::new(AtomicBool::new(false));
        let started = Arc::new(Barrier::new(2));
        let caught_up = Arc::new(Barrier::new(2));
        let reader = {
            let (done, started, caught_up) =
                (Arc::clone(&done), Arc::clone(&started), Arc::clone(&caught_up));
            std::thread::spawn(move || {
                let open = || {
                    let fds = (memfd.try_clone().expect("dup"), doorbell.try_clone().expect("dup"));
                    RingReader::open(fds.0, fds.1, 0).expect("a ring")
                };
                let mut reader = open();
                let (mut raced, mut lapped, mut last) = (0u64, 0u64, None);
                let mut record = Vec::new();
                let take = |record: &[u8], last: &mut Option<u64>| {
                    let index = is_whole(record).expect("a whole record");
                    assert!(last.is_none_or(|last| index > last), "{index} after {last:?}");
                    *last = Some(index);
                };
                started.wait();
                while !done.load(Ordering::Relaxed) || reader.position() < reader.committed() {
                    match reader.next(u64::MAX, &mut record) {
                        Ok(true) => {
                            take(&record, &mut last);
                            raced += 1;
                        }
                        Ok(false) => std::thread::yield_now(),
                        Err(RingError::Lapped { .. }) => {
                            // Start again where the writer is (commit is a record boundary).
                            lapped += 1;
                            let at = reader.committed();
                            reader = open();
                            reader.position = at;
                        }
                        Err(err) => panic!("{err}"),
                    }
                }
                caught_up.wait();
                let mut calm = 0;
                while last != Some(RACED + CALM - 1) {
                    match reader.next(u64::MAX, &mut record) {
                        Ok(true) => {
                            take(&record, &mut last);
                            calm += 1;
                        }
                        Ok(false) => std::thread::yield_now(),
                        Err(err) => panic!("after the race: {err}"),
                    }
                }
                (raced, lapped, calm)
            })
        };
        started.wait();
        for index in 0..RACED {
            writer.append(&numbered(index)).expect("fits");
            if index % 4 == 0 {
                writer.publish();
            }
        }
        writer.publish();
        done.store(true, Ordering::Relaxed);
        caught_up.wait();
        for index in RACED..RACED + CALM {
            writer.append(&numbered(index)).expect("fits");
        }
        writer.publish();
        let (raced, lapped, calm) = reader.join().expect("the reader");
        assert_eq!(calm, CALM, "in the race: {raced} read, {lapped} laps");
    }

    #[test]
    fn garbage_in_the_ring_is_corrupt_never_a_panic() {
        let mut writer = RingWriter::create("test", 1).expect("ring");
        let mut reader = reader_of(&writer, 0);
        writer.append(b"hello").expect("fits");
        writer.append(b"world").expect("fits");
        writer.publish();
        let mut record = Vec::new();
        writer.scribble(0, 12345);
        let err = reader.next(u64::MAX, &mut record).expect_err("bad position");
        assert!(matches!(err, RingError::Corrupt { position: 0, .. }), "{err:?}");
        writer.scribble(0, 0);
        writer.scribble(8, u64::MAX);
        let err = reader.next(u64::MAX, &mut record).expect_err("bad length");
        assert!(matches!(err, RingError::Corrupt { position: 0, .. }), "{err:?}");
        writer.scribble(8, 1000);
        let err = reader.next(u64::MAX, &mut record).expect_err("past the commit");
        assert!(matches!(err, RingError::Corrupt { .. }), "{err:?}");
        assert_eq!(reader.position(), 0);
        // Noise everywhere: every read is a record or an error, none panics.
        let capacity = writer.capacity() as u64;
        let mut noise = 0x9e37_79b9_7f4a_7c15_u64;
        for at in (0..capacity).step_by(8) {
            noise ^= noise << 13;
            noise ^= noise >> 7;
            noise ^= noise << 17;
            writer.scribble(at, if at % 64 == 0 { at } else { noise % 4096 });
        }
        for start in (0..256).step_by(8) {
            let mut reader = reader_of(&writer, start);
            while let Ok(true) = reader.next(u64::MAX, &mut record) {}
        }
    }

    #[test]
    fn a_record_larger_than_a_quarter_of_the_ring_is_refused() {
        let mut writer = RingWriter::create("test", 1).expect("ring");
        let max = writer.capacity() / 4;
        writer.append(&vec![7; max]).expect("a quarter fits");
        let err = writer.append(&vec![7; max + 1]).expect_err("too large");
        assert!(
            matches!(err, RingError::TooLarge { len, max: limit } if len == max + 1 && limit == max)
        );
        assert_eq!(writer.head(), record_bytes(max as u64));
        assert!(RingWriter::create("test", MAX_RING_BYTES + 1).is_err());
    }

    #[test]
    fn a_session_cannot_write_its_ring() {
        use nix::sys::mman::mprotect;
        let writer = RingWriter::create("test", DEFAULT_RING_BYTES).expect("ring");
        let (memfd, doorbell) = writer.descriptors();
        // What a session holds: the descriptors as they arrive over its socket.
        let memfd = passed_through_a_socket(memfd);
        let doorbell = passed_through_a_socket(doorbell);
        let length = NonZeroUsize::new(HEADER_BYTES + writer.capacity()).expect("non-zero");
        let flags = MapFlags::MAP_SHARED;
        let write = ProtFlags::PROT_READ | ProtFlags::PROT_WRITE;
        // SAFETY: a new mapping at an address of the kernel's choosing; it is expected to fail
        // and, were it to succeed, would be unmapped at once without being touched.
        let mapped = unsafe { mmap(None, length, write, flags, &memfd, 0) };
        if let Ok(ptr) = mapped {
            // SAFETY: the mapping just made, never used.
            let _ = unsafe { munmap(ptr, length.get()) };
        }
        assert_eq!(mapped.err(), Some(Errno::EPERM), "a writable shared mapping");
        assert_eq!(nix::unistd::write(&memfd, b"forged"), Err(Errno::EPERM), "write(2)");
        let pwrite = nix::sys::uio::pwrite(&memfd, b"forged", HEADER_BYTES as i64);
        assert_eq!(pwrite, Err(Errno::EPERM), "pwrite(2)");
        assert_eq!(nix::unistd::ftruncate(&memfd, 0), Err(Errno::EPERM), "shrink");
        assert_eq!(nix::unistd::ftruncate(&memfd, 1 << 30), Err(Errno::EPERM), "grow");
        let unseal = fcntl(&memfd, FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_WRITE));
        assert_eq!(unseal, Err(Errno::EPERM), "the seals are sealed");
        let reader = RingReader::open(memfd, doorbell, 0).expect("a ring");
        let (base, len) = reader.mapping();
        // SAFETY: asks to make the reader's own mapping writable; expected to fail, and on
        // success nothing writes through it before the assertion below fails the test.
        let protected = unsafe { mprotect(base, len, write) };
        assert_eq!(protected, Err(Errno::EACCES), "mprotect of the read-only mapping");
    }

    /// A memfd the size of a ring with a valid header, sealed with `seals` (none if empty).
    fn fake_ring(flags: MFdFlags, seals: SealFlag) -> OwnedFd {
        let memfd = memfd_create("fake", flags).expect("memfd");
        nix::unistd::ftruncate(&memfd, (HEADER_BYTES + MIN_RING_BYTES) as i64).expect("size");
        let mut header = MAGIC.to_ne_bytes().to_vec();
        header.extend_from_slice(&(MIN_RING_BYTES as u64).to_ne_bytes());
        nix::sys::uio::pwrite(&memfd, &header, 0).expect("header");
        if !seals.is_empty() {
            fcntl(&memfd, FcntlArg::F_ADD_SEALS(seals)).expect("seal");
        }
        memfd
    }

    #[test]
    fn a_reader_refuses_what_is_not_a_sealed_ring() {
        let doorbell = || OwnedFd::from(EventFd::new().expect("eventfd"));
        let sealing = MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING;
        let refused = |memfd: OwnedFd| {
            let opened = RingReader::open(memfd, doorbell(), 0);
            assert!(matches!(opened, Err(RingError::NotARing(_))), "{opened:?}");
        };
        refused(fake_ring(sealing, SealFlag::empty()));
        refused(fake_ring(MFdFlags::MFD_CLOEXEC, SealFlag::empty()));
        refused(fake_ring(sealing, SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW));
        let (pipe, _writer) = nix::unistd::pipe().expect("pipe");
        refused(pipe);
        // The same memfd with the seals is accepted, and a wrong size or magic is not.
        RingReader::open(fake_ring(sealing, seals_readers_need()), doorbell(), 0).expect("a ring");
        let odd = memfd_create("odd", sealing).expect("memfd");
        nix::unistd::ftruncate(&odd, (HEADER_BYTES + MIN_RING_BYTES + 8) as i64).expect("size");
        fcntl(&odd, FcntlArg::F_ADD_SEALS(seals_readers_need())).expect("seal");
        refused(odd);
        let blank = memfd_create("blank", sealing).expect("memfd");
        nix::unistd::ftruncate(&blank, (HEADER_BYTES + MIN_RING_BYTES) as i64).expect("size");
        fcntl(&blank, FcntlArg::F_ADD_SEALS(seals_readers_need())).expect("seal");
        refused(blank);
    }

    #[test]
    fn the_doorbell_wakes_an_edge_triggered_poller_every_time_without_being_read() {
        use mio::unix::SourceFd;
        use mio::{Events, Interest, Poll, Token};
        use std::time::Duration;
        let writer = RingWriter::create("test", 1).expect("ring");
        let reader = reader_of(&writer, 0);
        let mut poll = Poll::new().expect("poll");
        let fd = reader.doorbell_fd();
        poll.registry()
            .register(&mut SourceFd(&fd), Token(7), Interest::READABLE)
            .expect("register");
        let mut events = Events::with_capacity(4);
        let mut woken = |timeout: Duration| {
            poll.poll(&mut events, Some(timeout)).expect("poll");
            events.iter().any(|event| event.token() == Token(7) && event.is_readable())
        };
        for _ in 0..3 {
            writer.ring_doorbell().expect("ring");
            assert!(woken(Duration::from_secs(10)), "a ring wakes the poller");
            assert!(!woken(Duration::from_millis(20)), "once: the edge was reported");
        }
    }
}
