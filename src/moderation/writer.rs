//! The state writer: the broker's one helper thread, which saves `state.toml` off the loop
//! ([`StateWriter`]), and its hand-off with the loop (one pending state, generations,
//! outcomes).
//!
//! It owns only the copy of [`Moderation`] it is handed and the file it writes; it must never
//! touch room state, connections or anything else of the broker's, nor decide which changes
//! the state holds (the broker's control side does, and puts a change in force only once it is
//! saved). Its thread starts at a submission, so only the broker submits, from its loop's
//! thread and after its signals are blocked: the thread inherits that mask.

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::Moderation;
use crate::clock::unix_now;

/// Writes the state file on a thread of its own, so that the broker's loop never waits for the
/// disk: a muted user renaming in a loop, or a slow or stuck disk, must not hold up anyone's
/// lines.
///
/// The hand-off holds one state: a newer one submitted before the older was written replaces
/// it (the newer contains every change of the older), so saves coalesce and the memory held is
/// one copy. Each submission gets a generation number; the outcome of the newest write that
/// finished is kept for [`StateWriter::take_outcome`], and `notify` (a `mio::Waker` in the
/// broker) is called after each write. A state whose write finished with generation `g` is on
/// disk (or not) together with every submission up to `g`.
///
/// The thread runs only while there is something to write: it starts with a submission and
/// ends after `IDLE_EXIT` (5 s) without one, so an idle daemon holds no thread (under a tight
/// `RLIMIT_NPROC` a thread takes the place of a session). It inherits the signal mask of the
/// thread that starts it: the broker's, which blocks the signals it reads from its signalfd.
/// If no thread can be started, [`StateWriter::submit`] writes itself (correct, but on the
/// loop), and says so once.
pub struct StateWriter {
    shared: Arc<Shared>,
    saver: Arc<Mutex<Saver>>,
    notify: Arc<dyn Fn() + Send + Sync>,
    submitted: u64,
    /// The last attempt to start the thread failed (logged once until one succeeds).
    cannot_start: bool,
    /// How long the thread waits for more work before it ends ([`IDLE_EXIT`]).
    idle_exit: Duration,
}

/// Writes one state; the thread's only work.
pub type Saver = Box<dyn FnMut(&mut Moderation) -> Result<(), String> + Send>;

#[derive(Default)]
struct Shared {
    slot: Mutex<Slot>,
    changed: Condvar,
}

#[derive(Default)]
struct Slot {
    /// The newest state not yet taken by the thread.
    pending: Option<(u64, Moderation)>,
    /// The thread is writing a state.
    writing: bool,
    /// The newest write that finished, and how; taken by the broker.
    outcome: Option<(u64, Result<(), String>)>,
    /// The thread is running (it clears this itself, under the lock, when it ends).
    running: bool,
    stop: bool,
}

/// How long the writer thread waits for more work before it ends.
const IDLE_EXIT: Duration = Duration::from_secs(5);

/// How long dropping a [`StateWriter`] waits for the last state to be written.
const FINAL_WRITE: Duration = Duration::from_secs(2);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind: still usable.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl StateWriter {
    /// A writer of the state file at `path`.
    pub fn new(path: PathBuf, notify: impl Fn() + Send + Sync + 'static) -> StateWriter {
        Self::with_saver(
            Box::new(move |state: &mut Moderation| {
                state.save(&path, unix_now()).map_err(|err| err.to_string())
            }),
            notify,
        )
    }

    /// A writer that writes with `saver` (tests give one that can be held up).
    pub fn with_saver(saver: Saver, notify: impl Fn() + Send + Sync + 'static) -> StateWriter {
        StateWriter {
            shared: Arc::new(Shared::default()),
            saver: Arc::new(Mutex::new(saver)),
            notify: Arc::new(notify),
            submitted: 0,
            cannot_start: false,
            idle_exit: IDLE_EXIT,
        }
    }

    /// Hands over `state` to be written (replacing one not yet taken); returns its generation.
    pub fn submit(&mut self, state: Moderation) -> u64 {
        self.submitted += 1;
        let generation = self.submitted;
        let mut slot = lock(&self.shared.slot);
        slot.pending = Some((generation, state));
        if slot.running {
            self.shared.changed.notify_all();
            return generation;
        }
        let (shared, saver, notify) =
            (Arc::clone(&self.shared), Arc::clone(&self.saver), Arc::clone(&self.notify));
        let idle_exit = self.idle_exit;
        let spawned = std::thread::Builder::new()
            .name("state-writer".into())
            .spawn(move || write_until_idle(&shared, &saver, &*notify, idle_exit));
        match spawned {
            Ok(_) => {
                slot.running = true;
                self.cannot_start = false;
            }
            Err(err) => {
                if !self.cannot_start {
                    log::warn!(
                        "cannot start the thread that writes the state file ({err}); the broker writes it itself"
                    );
                    self.cannot_start = true;
                }
                if let Some((generation, mut state)) = slot.pending.take() {
                    let result = (*lock(&self.saver))(&mut state);
                    slot.outcome = Some((generation, result));
                    drop(slot);
                    (self.notify)();
                }
            }
        }
        generation
    }

    /// The newest write that finished since the last call: its generation and outcome.
    pub fn take_outcome(&mut self) -> Option<(u64, Result<(), String>)> {
        lock(&self.shared.slot).outcome.take()
    }

    /// Nothing is waiting to be written or being written.
    pub fn idle(&self) -> bool {
        let slot = lock(&self.shared.slot);
        slot.pending.is_none() && !slot.writing
    }
}

/// The writer thread: takes the newest state, writes it, reports; ends when told to stop
/// (after writing what is pending) or after `idle_exit` with nothing to write.
fn write_until_idle(
    shared: &Shared,
    saver: &Mutex<Saver>,
    notify: &(dyn Fn() + Send + Sync),
    idle_exit: Duration,
) {
    let mut slot = lock(&shared.slot);
    loop {
        if let Some((generation, mut state)) = slot.pending.take() {
            slot.writing = true;
            drop(slot);
            let result = (*lock(saver))(&mut state);
            slot = lock(&shared.slot);
            slot.writing = false;
            slot.outcome = Some((generation, result));
            shared.changed.notify_all();
            notify();
            continue;
        }
        if slot.stop {
            slot.running = false;
            return;
        }
        let (next, waited) = shared
            .changed
            .wait_timeout(slot, idle_exit)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        slot = next;
        if waited.timed_out() && slot.pending.is_none() {
            slot.running = false;
            return;
        }
    }
}

impl Drop for StateWriter {
    /// Lets the thread write what is pending (for at most `FINAL_WRITE`, 2 s: a stuck disk must
    /// not keep the broker from stopping), then leaves it to end with the process.
    fn drop(&mut self) {
        let mut slot = lock(&self.shared.slot);
        slot.stop = true;
        self.shared.changed.notify_all();
        let deadline = std::time::Instant::now() + FINAL_WRITE;
        while slot.running && (slot.pending.is_some() || slot.writing) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            slot = self
                .shared
                .changed
                .wait_timeout(slot, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_writer_coalesces_what_arrives_while_it_writes_and_reports_the_newest() {
        use std::sync::mpsc;
        let (entered, writing) = mpsc::channel::<Option<String>>();
        let (release, released) = mpsc::channel::<()>();
        let released = Mutex::new(released);
        let saver: Saver = Box::new(move |state: &mut Moderation| {
            let _ = entered.send(state.motd.clone());
            let _ = lock(&released).recv();
            if state.motd.as_deref() == Some("first") { Err("disk stuck".into()) } else { Ok(()) }
        });
        let (woken, wakes) = mpsc::channel::<()>();
        let woken = Mutex::new(woken);
        let mut writer = StateWriter::with_saver(saver, move || {
            let _ = lock(&woken).send(());
        });
        let with = |motd: &str| Moderation { motd: Some(motd.into()), ..Default::default() };
        assert_eq!(writer.submit(with("first")), 1);
        assert_eq!(writing.recv().expect("writing"), Some("first".into()));
        assert!(!writer.idle());
        // Held up on the first write: the next two coalesce, the newest wins.
        assert_eq!(writer.submit(with("second")), 2);
        assert_eq!(writer.submit(with("third")), 3);
        release.send(()).expect("release");
        wakes.recv().expect("woken after the first write");
        assert_eq!(writing.recv().expect("writing"), Some("third".into()), "second is skipped");
        release.send(()).expect("release");
        wakes.recv().expect("woken after the second write");
        assert_eq!(writer.take_outcome(), Some((3, Ok(()))));
        assert_eq!(writer.take_outcome(), None);
        assert!(writer.idle());
    }

    #[test]
    fn the_state_writer_runs_a_thread_only_while_there_is_something_to_write() {
        let saves = Arc::new(Mutex::new(0));
        let counted = Arc::clone(&saves);
        let saver: Saver = Box::new(move |_: &mut Moderation| {
            *lock(&counted) += 1;
            Ok(())
        });
        let mut writer = StateWriter::with_saver(saver, || {});
        writer.idle_exit = Duration::from_millis(20);
        let running = |writer: &StateWriter| lock(&writer.shared.slot).running;
        assert!(!running(&writer), "no thread before the first save");
        for round in 1..=2 {
            writer.submit(Moderation::default());
            assert!(running(&writer) || *lock(&saves) == round);
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while running(&writer) {
                assert!(std::time::Instant::now() < deadline, "the idle thread did not end");
                std::thread::sleep(Duration::from_millis(5));
            }
            assert_eq!(*lock(&saves), round, "written before the thread ended");
        }
    }
}
