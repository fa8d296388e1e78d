//! The `log` backend: syslog (LOG_DAEMON, ident `chatd`, with the pid) or standard error.
//!
//! Owns the process-wide log sink. Because session children are forked from the master, the pid
//! in each line must be re-read after `fork`: [`reopen_after_fork`] replaces the sink (and its
//! connection to `/dev/log`) in the child. The master is single-threaded and never forks while
//! logging, so the sink's lock is never held across a `fork`.
//!
//! Never log message contents: callers log who and what happened, not what anyone said.

use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Mutex;

use log::{Level, LevelFilter, Log, Metadata, Record};
use serde::Deserialize;
use syslog::{Facility, Formatter3164, LoggerBackend};

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogTarget {
    /// The local syslog daemon through `/dev/log`, facility daemon.
    Syslog,
    /// Standard error, one line per record.
    Stderr,
}

const IDENT: &str = "chatd";

enum Sink {
    Syslog(syslog::Logger<LoggerBackend, Formatter3164>),
    Stderr { pid: u32, journal: bool },
}

static SINK: Mutex<Option<Sink>> = Mutex::new(None);
static TARGET: Mutex<Option<LogTarget>> = Mutex::new(None);

struct ChatdLogger;

static LOGGER: ChatdLogger = ChatdLogger;

/// Installs the logger. If syslog cannot be reached, falls back to standard error and says so.
pub fn init(target: LogTarget, level: LevelFilter) {
    if let Ok(mut slot) = TARGET.lock() {
        *slot = Some(target);
    }
    let fallback = install_sink(target);
    // set_logger fails only if called twice, which a process never does.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
    if let Some(err) = fallback {
        log::warn!("cannot reach syslog ({err}); logging to standard error");
    }
}

/// Re-opens the sink in a freshly forked child so that its lines carry the child's pid.
pub fn reopen_after_fork() {
    let target = TARGET.lock().ok().and_then(|slot| *slot);
    if let Some(target) = target {
        install_sink(target);
    }
}

/// The descriptor the sink holds (the syslog socket), which a forked child must keep open.
pub fn descriptor() -> Option<RawFd> {
    let slot = SINK.lock().ok()?;
    match slot.as_ref()? {
        Sink::Syslog(logger) => match &logger.backend {
            LoggerBackend::Unix(socket) => Some(socket.as_raw_fd()),
            LoggerBackend::UnixStream(writer) => Some(writer.get_ref().as_raw_fd()),
            LoggerBackend::Udp(socket, _) => Some(socket.as_raw_fd()),
            LoggerBackend::Tcp(writer) => Some(writer.get_ref().as_raw_fd()),
        },
        Sink::Stderr { .. } => None,
    }
}

/// Opens the sink for `target`; returns the syslog error if it fell back to stderr.
fn install_sink(target: LogTarget) -> Option<String> {
    let pid = std::process::id();
    let (sink, error) = match target {
        LogTarget::Syslog => {
            let formatter = Formatter3164 {
                facility: Facility::LOG_DAEMON,
                hostname: None,
                process: IDENT.to_string(),
                pid,
            };
            match syslog::unix(formatter) {
                Ok(logger) => (Sink::Syslog(logger), None),
                Err(err) => (stderr_sink(pid), Some(err.to_string())),
            }
        }
        LogTarget::Stderr => (stderr_sink(pid), None),
    };
    if let Ok(mut slot) = SINK.lock() {
        *slot = Some(sink);
    }
    error
}

fn stderr_sink(pid: u32) -> Sink {
    // Under systemd, stderr goes to the journal, which reads sd-daemon(3) priority prefixes.
    Sink::Stderr { pid, journal: std::env::var_os("JOURNAL_STREAM").is_some() }
}

/// sd-daemon(3) / syslog priority of a level.
fn priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

impl Log for ChatdLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let Ok(mut slot) = SINK.lock() else {
            return;
        };
        let message = record.args().to_string();
        match slot.as_mut() {
            Some(Sink::Syslog(logger)) => {
                let _ = match record.level() {
                    Level::Error => logger.err(&message),
                    Level::Warn => logger.warning(&message),
                    Level::Info => logger.info(&message),
                    Level::Debug | Level::Trace => logger.debug(&message),
                };
            }
            Some(Sink::Stderr { pid, journal }) => {
                let line = if *journal {
                    format!("<{}>{message}\n", priority(record.level()))
                } else {
                    format!(
                        "{IDENT}[{pid}]: {}: {message}\n",
                        record.level().as_str().to_lowercase()
                    )
                };
                // One write per line keeps lines from different processes whole.
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
            None => {}
        }
    }

    fn flush(&self) {}
}
