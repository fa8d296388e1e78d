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
use syslog::{Facility, Formatter3164, Formatter5424, LoggerBackend};

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogTarget {
    /// The local syslog daemon through `/dev/log`, facility daemon.
    Syslog,
    /// Standard error, one line per record.
    Stderr,
}

/// The syslog message format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyslogFormat {
    /// BSD syslog, what `/dev/log` readers expect by default.
    #[default]
    Rfc3164,
    /// The structured IETF format.
    Rfc5424,
}

/// How to reach syslog.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyslogOptions {
    /// The socket; `None` looks in the usual places (`/dev/log`, ...).
    pub socket: Option<std::path::PathBuf>,
    pub format: SyslogFormat,
}

const IDENT: &str = "chatd";

enum Sink {
    Syslog(syslog::Logger<LoggerBackend, Formatter3164>),
    Syslog5424(syslog::Logger<LoggerBackend, Formatter5424>),
    Stderr {
        pid: u32,
        journal: bool,
    },
    /// Standard error is the client and syslog is not running.
    Nowhere,
}

static SINK: Mutex<Option<Sink>> = Mutex::new(None);
/// Set when standard error is a socket (the client, under inetd): never log there.
static STDERR_FORBIDDEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn stderr_is_a_socket() -> bool {
    nix::sys::stat::fstat(std::io::stderr())
        .is_ok_and(|stat| stat.st_mode & nix::libc::S_IFMT == nix::libc::S_IFSOCK)
}
static TARGET: Mutex<Option<(LogTarget, SyslogOptions)>> = Mutex::new(None);

struct ChatdLogger;

static LOGGER: ChatdLogger = ChatdLogger;

/// Installs the logger. If syslog cannot be reached, falls back to standard error and says so.
pub fn init(target: LogTarget, syslog: SyslogOptions, level: LevelFilter) {
    let stderr_is_the_client = stderr_is_a_socket();
    if stderr_is_the_client {
        // inetd and xinetd hand the client connection over as standard error too: a log line
        // there would reach the client. Log to syslog only, and nowhere if it is not running.
        STDERR_FORBIDDEN.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let target = if stderr_is_the_client { LogTarget::Syslog } else { target };
    if let Ok(mut slot) = TARGET.lock() {
        *slot = Some((target, syslog.clone()));
    }
    let fallback = install_sink(target, &syslog);
    // set_logger fails only if called twice, which a process never does.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
    if let Some(err) = fallback {
        log::warn!("cannot reach syslog ({err}); logging to standard error");
    }
}

/// Re-opens the sink in a freshly forked child so that its lines carry the child's pid.
pub fn reopen_after_fork() {
    let target = TARGET.lock().ok().and_then(|slot| slot.clone());
    if let Some((target, syslog)) = target {
        install_sink(target, &syslog);
    }
}

/// The descriptor the sink holds (the syslog socket), which a forked child must keep open.
pub fn descriptor() -> Option<RawFd> {
    let slot = SINK.lock().ok()?;
    match slot.as_ref()? {
        Sink::Syslog(logger) => Some(backend_descriptor(&logger.backend)),
        Sink::Syslog5424(logger) => Some(backend_descriptor(&logger.backend)),
        Sink::Stderr { .. } | Sink::Nowhere => None,
    }
}

fn backend_descriptor(backend: &LoggerBackend) -> RawFd {
    match backend {
        LoggerBackend::Unix(socket) => socket.as_raw_fd(),
        LoggerBackend::UnixStream(writer) => writer.get_ref().as_raw_fd(),
        LoggerBackend::Udp(socket, _) => socket.as_raw_fd(),
        LoggerBackend::Tcp(writer) => writer.get_ref().as_raw_fd(),
    }
}

/// Opens the sink for `target`; returns the syslog error if it fell back to stderr.
fn install_sink(target: LogTarget, options: &SyslogOptions) -> Option<String> {
    let pid = std::process::id();
    let (sink, error) = match target {
        LogTarget::Syslog => {
            let process = IDENT.to_string();
            let facility = Facility::LOG_DAEMON;
            let connected = match (options.format, &options.socket) {
                (SyslogFormat::Rfc3164, socket) => {
                    let formatter = Formatter3164 { facility, hostname: None, process, pid };
                    match socket {
                        Some(path) => syslog::unix_custom(formatter, path),
                        None => syslog::unix(formatter),
                    }
                    .map(Sink::Syslog)
                }
                (SyslogFormat::Rfc5424, socket) => {
                    let formatter = Formatter5424 { facility, hostname: None, process, pid };
                    match socket {
                        Some(path) => syslog::unix_custom(formatter, path),
                        None => syslog::unix(formatter),
                    }
                    .map(Sink::Syslog5424)
                }
            };
            match connected {
                Ok(sink) => (sink, None),
                Err(_) if STDERR_FORBIDDEN.load(std::sync::atomic::Ordering::Relaxed) => {
                    (Sink::Nowhere, None)
                }
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

/// The `log` target that marks a record as syslog *notice* (normal but significant: refusals,
/// limits), between info and warning. `log` has no such level: use
/// `log::info!(target: logging::NOTICE, ...)`.
pub const NOTICE: &str = "notice";

/// Syslog severities chatd uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Severity {
    Err,
    Warning,
    Notice,
    Info,
    Debug,
}

impl Severity {
    fn of(record: &Record) -> Severity {
        match record.level() {
            Level::Error => Severity::Err,
            Level::Warn => Severity::Warning,
            Level::Info if record.target() == NOTICE => Severity::Notice,
            Level::Info => Severity::Info,
            Level::Debug | Level::Trace => Severity::Debug,
        }
    }

    /// sd-daemon(3) / syslog priority number.
    fn priority(self) -> u8 {
        match self {
            Severity::Err => 3,
            Severity::Warning => 4,
            Severity::Notice => 5,
            Severity::Info => 6,
            Severity::Debug => 7,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Severity::Err => "error",
            Severity::Warning => "warn",
            Severity::Notice => "notice",
            Severity::Info => "info",
            Severity::Debug => "debug",
        }
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
        let severity = Severity::of(record);
        match slot.as_mut() {
            Some(Sink::Syslog(logger)) => {
                let _ = match severity {
                    Severity::Err => logger.err(&message),
                    Severity::Warning => logger.warning(&message),
                    Severity::Notice => logger.notice(&message),
                    Severity::Info => logger.info(&message),
                    Severity::Debug => logger.debug(&message),
                };
            }
            Some(Sink::Syslog5424(logger)) => {
                let message = (0, std::collections::BTreeMap::new(), &message);
                let _ = match severity {
                    Severity::Err => logger.err(message),
                    Severity::Warning => logger.warning(message),
                    Severity::Notice => logger.notice(message),
                    Severity::Info => logger.info(message),
                    Severity::Debug => logger.debug(message),
                };
            }
            Some(Sink::Stderr { pid, journal }) => {
                let line = if *journal {
                    format!("<{}>{message}\n", severity.priority())
                } else {
                    format!("{IDENT}[{pid}]: {}: {message}\n", severity.name())
                };
                // One write per line keeps lines from different processes whole.
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
            Some(Sink::Nowhere) | None => {}
        }
    }

    fn flush(&self) {}
}

/// Rate limiting for log lines that an attacker can trigger at will (refusals, resource errors):
/// the first event of a kind in a window is logged, the rest are counted and summarised once
/// when the window ends. Pure bookkeeping; the caller logs.
#[derive(Debug)]
pub struct LogThrottle {
    window: std::time::Duration,
    kinds: std::collections::HashMap<&'static str, ThrottleState>,
}

#[derive(Debug, Clone, Copy)]
struct ThrottleState {
    window_started: std::time::Instant,
    suppressed: u64,
}

impl LogThrottle {
    pub fn new(window: std::time::Duration) -> Self {
        LogThrottle { window, kinds: std::collections::HashMap::new() }
    }

    /// Whether to log this event of `kind` now (`false`: counted for the summary instead).
    pub fn allow(&mut self, kind: &'static str, now: std::time::Instant) -> bool {
        match self.kinds.get_mut(kind) {
            Some(state) if now.saturating_duration_since(state.window_started) < self.window => {
                state.suppressed += 1;
                false
            }
            _ => {
                self.kinds.insert(kind, ThrottleState { window_started: now, suppressed: 0 });
                true
            }
        }
    }

    /// Kinds whose window ended with suppressed events, with their counts; they are reset.
    pub fn summaries(&mut self, now: std::time::Instant) -> Vec<(&'static str, u64)> {
        let window = self.window;
        let mut due = Vec::new();
        self.kinds.retain(|kind, state| {
            let over = now.saturating_duration_since(state.window_started) >= window;
            if over && state.suppressed > 0 {
                due.push((*kind, state.suppressed));
            }
            !over
        });
        due.sort_unstable();
        due
    }

    /// When the next summary may be due.
    pub fn next_due(&self) -> Option<std::time::Instant> {
        self.kinds
            .values()
            .filter(|s| s.suppressed > 0)
            .map(|s| s.window_started + self.window)
            .min()
    }

    /// The window length, for wording summaries.
    pub fn window(&self) -> std::time::Duration {
        self.window
    }
}

/// A failure that repeats while its cause lasts (no descriptor for `accept`, no process for
/// `fork`): the first failure of an episode is logged and the rest are counted. The episode
/// ends once a success has come and `quiet` has passed without a failure; then its count is
/// reported once. A success sooner (a descriptor freed for a moment) does not end it, so a
/// cause that flaps is still one line, not one per readiness event. Pure bookkeeping; the
/// caller logs.
#[derive(Debug)]
pub struct FailureEpisode {
    quiet: std::time::Duration,
    failures: u64,
    last_failure: Option<std::time::Instant>,
    succeeded_since: bool,
}

impl FailureEpisode {
    pub fn new(quiet: std::time::Duration) -> Self {
        FailureEpisode { quiet, failures: 0, last_failure: None, succeeded_since: false }
    }

    /// Counts a failure; `true` if it starts an episode (log it).
    pub fn failed(&mut self, now: std::time::Instant) -> bool {
        let long_after =
            self.last_failure.is_none_or(|last| now.saturating_duration_since(last) >= self.quiet);
        let starts = self.failures == 0 || long_after;
        if starts {
            self.failures = 0;
        }
        self.failures += 1;
        self.last_failure = Some(now);
        self.succeeded_since = false;
        starts
    }

    /// Notes a success; returns the episode's failure count if this ends it.
    pub fn succeeded(&mut self, now: std::time::Instant) -> Option<u64> {
        if self.failures > 0 {
            self.succeeded_since = true;
        }
        self.ended(now)
    }

    /// The episode's failure count, once, if it is over by `now` (for a timer).
    pub fn ended(&mut self, now: std::time::Instant) -> Option<u64> {
        let due = self.due()?;
        if now < due {
            return None;
        }
        let failures = self.failures;
        *self = FailureEpisode::new(self.quiet);
        Some(failures)
    }

    /// When the episode will be over, if a success has been seen since the last failure.
    pub fn due(&self) -> Option<std::time::Instant> {
        match self.last_failure {
            Some(last) if self.failures > 0 && self.succeeded_since => Some(last + self.quiet),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn the_first_event_is_logged_the_rest_summarised_once() {
        let mut throttle = LogThrottle::new(Duration::from_secs(5));
        let start = Instant::now();
        assert!(throttle.allow("full", start));
        for n in 1..=9 {
            assert!(!throttle.allow("full", start + Duration::from_millis(n * 100)));
        }
        assert!(throttle.allow("other", start), "kinds are throttled separately");
        assert_eq!(throttle.next_due(), Some(start + Duration::from_secs(5)));
        assert_eq!(throttle.summaries(start + Duration::from_secs(1)), vec![]);
        assert_eq!(throttle.summaries(start + Duration::from_secs(5)), vec![("full", 9)]);
        assert_eq!(throttle.summaries(start + Duration::from_secs(6)), vec![]);
        assert!(throttle.allow("full", start + Duration::from_secs(6)));
    }

    #[test]
    fn a_flapping_failure_is_one_episode_logged_once_and_its_end_once() {
        let quiet = Duration::from_secs(5);
        let mut episode = FailureEpisode::new(quiet);
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        assert!(episode.failed(at(0)), "the first failure is logged");
        assert_eq!(episode.succeeded(at(100)), None, "a success at once does not end it");
        for ms in (200..3000).step_by(100) {
            assert!(!episode.failed(at(ms)), "nor does a failure after that start another");
            assert_eq!(episode.succeeded(at(ms + 50)), None);
        }
        assert_eq!(episode.due(), Some(at(2900) + quiet));
        assert_eq!(episode.ended(at(7000)), None);
        assert_eq!(episode.ended(at(7900)), Some(29), "the end is reported once, with the count");
        assert_eq!(episode.ended(at(9000)), None);
        assert_eq!(episode.due(), None, "nothing is left of the episode");
        assert!(episode.failed(at(20_000)), "a later failure is a new episode");
        assert!(episode.failed(at(40_000)), "and so is one long after, even without a success");
        assert_eq!(episode.succeeded(at(50_000)), Some(1), "a success long after ends it at once");
    }
}
