//! `chatctl`, the operator's command: its command line, one request over `control.sock`, and
//! the exit status. What the answers look like is [`output`]'s.
//!
//! It must not need anything but the socket: no settings file, no privileges of its own (the
//! broker decides who may ask, from the caller's credentials). Exit codes: 0 done, 1 the request
//! failed, 2 usage, 3 the daemon cannot be reached or refused the caller.

pub mod accounts;
pub mod output;
mod upgrade;

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::proto::codec;
use crate::proto::control::{
    CONTROL_VERSION, ControlFrame, ControlReply, ControlRequest, MAX_MOTD_BYTES, MAX_REQUEST_LEN,
};

/// Exit status: the request was carried out.
pub const EXIT_OK: u8 = 0;
/// Exit status: the daemon could not carry out the request (no such nick, ...).
pub const EXIT_FAILED: u8 = 1;
/// Exit status: the command line is wrong.
pub const EXIT_USAGE: u8 = 2;
/// Exit status: the daemon cannot be reached, or refused the caller.
pub const EXIT_UNREACHABLE: u8 = 3;

/// How long chatctl waits for the daemon's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);
/// How long chatctl waits for a backup (the broker gives it 120 s).
const BACKUP_ANSWER_TIMEOUT: Duration = Duration::from_secs(125);

/// Control a running chatd: see who is on, remove and ban users, announce, reload, stop.
///
/// Allowed for root, the daemon's user, and members of the admin group (chatd-admin).
/// Exit status: 0 done, 1 the request failed, 2 usage error, 3 chatd cannot be reached or
/// refused you.
#[derive(Debug, Parser)]
#[command(name = "chatctl", version, about)]
pub struct Ctl {
    #[command(subcommand)]
    pub command: Command,

    /// The daemon's runtime directory (where control.sock is). Default: /run/chatd if a daemon
    /// serves it, else the directory chatd uses for the calling user.
    #[arg(long, value_name = "DIR", global = true)]
    pub runtime_dir: Option<PathBuf>,

    /// Print the answer as JSON, for scripts.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Version, uptime, pids, connections, rooms, rates, drops and refusals.
    Status {
        /// Print the figures in the Prometheus text format.
        #[arg(long, conflicts_with = "json")]
        prometheus: bool,
        /// Write the output to FILE atomically (for node_exporter's textfile collector).
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Users (of ROOM, or all): nick, room, address, pid, connected for, idle, muted.
    Who { room: Option<String> },
    /// Rooms with their member counts and topics.
    Rooms,
    /// Disconnect a user; the room is told, with the reason.
    Kick {
        nick: String,
        /// Shown to the user and the room.
        reason: Vec<String>,
    },
    /// Ban an address, a network (CIDR) or a nickname; connected matches are disconnected.
    Ban {
        /// ADDR, ADDR/PREFIX or NICK.
        target: String,
        /// How long, like 30m, 12h or 7d. Default: until unbanned.
        #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
        duration: Option<u64>,
        reason: Vec<String>,
    },
    /// Lift a ban.
    Unban { target: String },
    /// Bans in force.
    Bans,
    /// Keep a user's lines from everyone but the user.
    Mute {
        nick: String,
        /// How long, like 10m. Default: until unmuted.
        #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
        duration: Option<u64>,
    },
    /// Lift a mute.
    Unmute { nick: String },
    /// Mutes in force, whether or not their user is connected.
    Mutes,
    /// Send a system message to every room, or to one.
    Announce {
        #[arg(long, value_name = "ROOM")]
        room: Option<String>,
        #[arg(required = true)]
        text: Vec<String>,
    },
    /// Show, set (TEXT or --file) or clear the message of the day shown after login.
    Motd {
        #[arg(conflicts_with_all = ["file", "clear"])]
        text: Vec<String>,
        #[arg(long, value_name = "FILE", conflicts_with = "clear")]
        file: Option<PathBuf>,
        #[arg(long)]
        clear: bool,
    },
    /// Read the settings and the moderation state again (like SIGHUP).
    Reload,
    /// Replace the running chatd's code without disconnecting anyone: the master executes the
    /// new binary in place (after `--check-upgrade` passes), then the broker is replaced;
    /// sessions keep their code until their clients leave. Waits for the outcome.
    Upgrade {
        /// The new binary. Default: the path chatd was started from (where a package
        /// installs the new version).
        #[arg(long, value_name = "PATH")]
        binary: Option<PathBuf>,
    },
    /// Warn everyone, wait, then stop the daemon.
    Shutdown {
        /// Seconds between the warning and the stop.
        #[arg(long, value_name = "SECONDS", default_value_t = 0)]
        grace: u64,
        /// Added to the warning.
        #[arg(long, value_name = "TEXT")]
        message: Option<String>,
    },
    /// Write a consistent copy of the live database (SQLite) to FILE, which must not exist.
    Backup { file: PathBuf },
    /// Stored lines of ROOM, oldest first (at most 10000), with their times in UTC.
    History {
        room: String,
        /// From this time (2026-12-01T10:00:00Z) or this long ago (2h, 3days). Default: all
        /// that is kept.
        #[arg(long, value_name = "TIME", value_parser = parse_since)]
        since: Option<u64>,
    },
    /// Delete every stored line said under NICK (for a person who asks for it).
    Forget { nick: String },
    /// Registered nicks: list, show, reset a password, delete, grant or revoke admin.
    Accounts {
        #[command(subcommand)]
        action: Option<accounts::AccountsCommand>,
    },
}

/// Most lines one `chatctl history` prints.
pub const HISTORY_LIMIT: u32 = 10_000;

/// `2026-12-01T10:00:00Z` or an age like `2h`: Unix seconds.
fn parse_since(text: &str) -> Result<u64, String> {
    let at = match humantime::parse_rfc3339_weak(text) {
        Ok(at) => at,
        Err(_) => {
            let ago = humantime::parse_duration(text).map_err(|_| {
                format!("{text:?} is neither a time (2026-12-01T10:00:00Z) nor an age (2h, 3days)")
            })?;
            std::time::SystemTime::now()
                .checked_sub(ago)
                .ok_or_else(|| format!("{text} ago is before the epoch"))?
        }
    };
    Ok(at.duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_secs()))
}

/// `30`, `90s`, `10m`, `12h`, `7d`, `1h 30m`: seconds.
pub(crate) fn parse_duration(text: &str) -> Result<u64, String> {
    if let Ok(seconds) = text.trim().parse::<u64>() {
        return Ok(seconds);
    }
    let duration =
        humantime::parse_duration(text).map_err(|err| format!("{err} (try 30m, 12h or 7d)"))?;
    if duration.is_zero() {
        return Err("a duration must be more than zero".into());
    }
    Ok(duration.as_secs().max(1))
}

fn joined(words: &[String]) -> Option<String> {
    let text = words.join(" ");
    (!text.trim().is_empty()).then_some(text)
}

/// Why chatctl could not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("cannot reach chatd at {path}: {source} (is it running? try --runtime-dir)")]
    Connect { path: PathBuf, source: io::Error },
    #[error("no answer from chatd at {path}: {source}")]
    Exchange { path: PathBuf, source: io::Error },
    #[error("{0}")]
    Usage(String),
}

/// Where control.sock is: the given directory, else the system daemon's if it serves one, else
/// the calling user's.
pub fn control_socket(runtime_dir: Option<&Path>) -> PathBuf {
    const NAME: &str = "control.sock";
    if let Some(dir) = runtime_dir {
        return dir.join(NAME);
    }
    let system = Path::new("/run/chatd").join(NAME);
    if system.exists() {
        return system;
    }
    crate::config::default_runtime_dir().join(NAME)
}

/// Turns the command line into the request to send.
pub fn request(command: &Command) -> Result<ControlRequest, CtlError> {
    Ok(match command.clone() {
        Command::Status { .. } => ControlRequest::Status,
        Command::Who { room } => ControlRequest::Who { room },
        Command::Rooms => ControlRequest::Rooms,
        Command::Kick { nick, reason } => ControlRequest::Kick { nick, reason: joined(&reason) },
        Command::Ban { target, duration, reason } => {
            ControlRequest::Ban { target, seconds: duration, reason: joined(&reason) }
        }
        Command::Unban { target } => ControlRequest::Unban { target },
        Command::Bans => ControlRequest::Bans,
        Command::Mute { nick, duration } => ControlRequest::Mute { nick, seconds: duration },
        Command::Unmute { nick } => ControlRequest::Unmute { nick },
        Command::Mutes => ControlRequest::Mutes,
        Command::Announce { room, text } => ControlRequest::Announce { room, text: text.join(" ") },
        Command::Motd { text, file, clear } => {
            let text = if clear {
                Some(String::new())
            } else if let Some(file) = file {
                let text = std::fs::read_to_string(&file).map_err(|err| {
                    CtlError::Usage(format!("cannot read {}: {err}", file.display()))
                })?;
                if text.len() > MAX_MOTD_BYTES {
                    return Err(CtlError::Usage(format!(
                        "{} has {} bytes; a message of the day may have {} KiB (and 50 lines)",
                        file.display(),
                        text.len(),
                        MAX_MOTD_BYTES >> 10
                    )));
                }
                Some(text)
            } else {
                joined(&text)
            };
            ControlRequest::Motd { text }
        }
        Command::Reload => ControlRequest::Reload,
        Command::Upgrade { binary } => {
            ControlRequest::Upgrade { binary: binary.as_ref().map(|b| b.display().to_string()) }
        }
        Command::Shutdown { grace, message } => {
            ControlRequest::Shutdown { grace_seconds: grace, message }
        }
        Command::Backup { .. } => ControlRequest::Backup,
        Command::History { room, since } => {
            ControlRequest::History { room, since: since.unwrap_or(0), limit: HISTORY_LIMIT }
        }
        Command::Forget { nick } => ControlRequest::Forget { nick },
        Command::Accounts { action } => {
            ControlRequest::Accounts(accounts::request(action.as_ref())?)
        }
    })
}

/// Sends one request and reads its answer; `attached` goes with the request's first byte.
pub fn exchange(
    path: &Path,
    request: ControlRequest,
    attached: Option<&std::fs::File>,
) -> Result<ControlReply, CtlError> {
    exchange_in(path, CONTROL_VERSION, request, attached)
}

/// [`exchange`] in the frame of control protocol `version`: only for a request whose bytes
/// that version reads as this one's (`Upgrade`, see `upgrade`).
fn exchange_in(
    path: &Path,
    version: u32,
    request: ControlRequest,
    attached: Option<&std::fs::File>,
) -> Result<ControlReply, CtlError> {
    let mut stream = UnixStream::connect(path)
        .map_err(|source| CtlError::Connect { path: path.to_path_buf(), source })?;
    let exchange_error = |source| CtlError::Exchange { path: path.to_path_buf(), source };
    // A backup takes as long as copying the database does.
    let timeout = if attached.is_some() { BACKUP_ANSWER_TIMEOUT } else { ANSWER_TIMEOUT };
    stream.set_read_timeout(Some(timeout)).map_err(exchange_error)?;
    let frame = codec::frame(&ControlFrame { version, request })
        .map_err(|err| exchange_error(io::Error::other(err)))?;
    if frame.len() > codec::HEADER_LEN + MAX_REQUEST_LEN {
        return Err(CtlError::Usage(format!(
            "the request has {} bytes; chatd takes at most {} KiB",
            frame.len(),
            MAX_REQUEST_LEN >> 10
        )));
    }
    // A caller chatd refuses is answered and closed at once, possibly before this write: its
    // answer is waiting to be read, and says more than the broken pipe.
    let written = match attached {
        None => stream.write_all(&frame),
        Some(file) => send_attached(&mut stream, &frame, file),
    };
    let mut received = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        match codec::decode_frame::<ControlReply>(&received) {
            Ok(Some((reply, _))) => return Ok(reply),
            Ok(None) => {}
            Err(err) => return Err(exchange_error(io::Error::other(err))),
        }
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(exchange_error(written.err().unwrap_or(err))),
        };
        if n == 0 {
            if let Err(err) = written {
                return Err(exchange_error(err));
            }
            return Err(exchange_error(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the daemon closed the connection without answering",
            )));
        }
        received.extend_from_slice(&chunk[..n]);
    }
}

/// Writes `frame` with `file` attached to its first bytes (the first write carries it).
fn send_attached(stream: &mut UnixStream, frame: &[u8], file: &std::fs::File) -> io::Result<()> {
    use std::os::fd::AsFd;
    let sent = crate::fd_passing::send_with_fds(stream.as_fd(), frame, &[file.as_fd()])?;
    stream.write_all(&frame[sent..])
}

/// Creates the empty file a backup goes into, readable by its owner only: it holds
/// everything people said.
fn create_backup_file(path: &Path) -> Result<std::fs::File, CtlError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|err| CtlError::Usage(format!("cannot create {}: {err}", path.display())))
}

/// Runs chatctl; returns the exit status.
pub fn run(ctl: Ctl) -> u8 {
    if let Command::Upgrade { binary } = &ctl.command {
        return upgrade::run(&control_socket(ctl.runtime_dir.as_deref()), binary.clone());
    }
    // A reset's one-time password is printed once the broker took its tag.
    let reset = match &ctl.command {
        Command::Accounts { action: Some(accounts::AccountsCommand::ResetPassword { nick }) } => {
            match accounts::reset(nick.clone()) {
                Ok(reset) => Some(reset),
                Err(err) => {
                    eprintln!("chatctl: {err}");
                    return EXIT_FAILED;
                }
            }
        }
        _ => None,
    };
    let request = match &reset {
        Some(reset) => Ok(ControlRequest::Accounts(reset.request.clone())),
        None => request(&ctl.command),
    };
    let request = match request {
        Ok(request) => request,
        Err(err) => {
            eprintln!("chatctl: {err}");
            return EXIT_USAGE;
        }
    };
    let backup = match &ctl.command {
        Command::Backup { file } => match create_backup_file(file) {
            Ok(created) => Some((file.clone(), created)),
            Err(err) => {
                eprintln!("chatctl: {err}");
                return EXIT_FAILED;
            }
        },
        _ => None,
    };
    let path = control_socket(ctl.runtime_dir.as_deref());
    let answer = exchange(&path, request, backup.as_ref().map(|(_, file)| file));
    if let Some((file, _)) = &backup
        && !matches!(answer, Ok(ControlReply::BackedUp { .. }))
    {
        // Nothing or part of a copy: no file that looks like a backup is left behind.
        let _ = std::fs::remove_file(file);
    }
    let reply = match answer {
        Ok(reply) => reply,
        Err(err @ CtlError::Usage(_)) => {
            eprintln!("chatctl: {err}");
            return EXIT_USAGE;
        }
        Err(err) => {
            eprintln!("chatctl: {err}");
            return EXIT_UNREACHABLE;
        }
    };
    let status = match &reply {
        ControlReply::Failed(_) => EXIT_FAILED,
        ControlReply::Denied(_) | ControlReply::VersionMismatch { .. } => EXIT_UNREACHABLE,
        _ => EXIT_OK,
    };
    let format = match &ctl.command {
        Command::Status { prometheus: true, .. } => output::Format::Prometheus,
        _ if ctl.json => output::Format::Json,
        _ => output::Format::Human,
    };
    let text = output::render(&reply, format);
    if status != EXIT_OK {
        eprint!("chatctl: {text}");
        return status;
    }
    match &ctl.command {
        Command::Status { output: Some(file), .. } => {
            if let Err(err) = output::write_atomically(file, &text) {
                eprintln!("chatctl: cannot write {}: {err}", file.display());
                return EXIT_FAILED;
            }
        }
        Command::Backup { file } if !ctl.json => {
            if let ControlReply::BackedUp { bytes } = reply {
                println!("backed up to {} ({bytes} bytes)", file.display());
            }
        }
        Command::Accounts { action: Some(accounts::AccountsCommand::ResetPassword { .. }) } => {
            if let Some(reset) = &reset {
                match ctl.json {
                    true => print!("{}", accounts::reset_done_json(&reset.nick, &reset.password)),
                    false => print!("{}", accounts::reset_done(&reset.nick, &reset.password)),
                }
            }
        }
        Command::Accounts { action: Some(accounts::AccountsCommand::Show { .. }) } => {
            if let ControlReply::Accounts(rows) = &reply
                && let [row] = rows.as_slice()
            {
                match ctl.json {
                    true => print!("{}", accounts::details_json(row)),
                    false => print!("{}", accounts::details(row)),
                }
            }
        }
        _ => print!("{text}"),
    }
    EXIT_OK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(parse_duration("90"), Ok(90));
        assert_eq!(parse_duration("10m"), Ok(600));
        assert_eq!(parse_duration("1h 30m"), Ok(5400));
        assert_eq!(parse_duration("7d"), Ok(7 * 86400));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("0s").is_err());
    }

    #[test]
    fn the_command_line_becomes_a_request() {
        let ctl =
            Ctl::try_parse_from(["chatctl", "ban", "10.0.0.0/8", "--for", "1h", "spam", "bots"])
                .expect("parses");
        assert_eq!(
            request(&ctl.command).expect("request"),
            ControlRequest::Ban {
                target: "10.0.0.0/8".into(),
                seconds: Some(3600),
                reason: Some("spam bots".into())
            }
        );
        let ctl = Ctl::try_parse_from(["chatctl", "motd", "--clear"]).expect("parses");
        assert_eq!(
            request(&ctl.command).expect("request"),
            ControlRequest::Motd { text: Some(String::new()) }
        );
        assert!(Ctl::try_parse_from(["chatctl", "announce"]).is_err(), "text is required");
        let dir = tempfile::tempdir().expect("temp dir");
        let motd = dir.path().join("motd");
        std::fs::write(&motd, "x".repeat(MAX_MOTD_BYTES + 1)).expect("write");
        let ctl = Ctl::try_parse_from(["chatctl", "motd", "--file", motd.to_str().expect("path")])
            .expect("parses");
        let refused = request(&ctl.command).map(|_| ()).map_err(|err| err.to_string());
        assert!(refused.is_err_and(|why| why.contains("32 KiB")), "an oversize file is refused");
        assert!(Ctl::try_parse_from(["chatctl", "status", "--prometheus", "--json"]).is_err());
    }
}
