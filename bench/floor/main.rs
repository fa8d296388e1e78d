//! `chatd-floor`: the floor of chatd's process shape, for the benchmark (docs/PERFORMANCE.md,
//! "The floor"). A master binds `--listen`, starts one broker and forks one process per
//! accepted client; each client process forwards its client's lines to the broker over a Unix
//! socket; the broker appends each line once, rendered as `<nick> text`, to ONE shared ring (a
//! memfd every process maps, the broker writable) and writes an eventfd doorbell once per loop
//! turn in which it appended; the client processes watch the doorbell edge-triggered, never
//! read it, and copy everything new from the ring to their client in one write per wake-up.
//!
//! It speaks exactly what `chatd-bench` needs of chatd's protocol: the first line is the nick,
//! `*** NICK has joined lobby` admits it, and every later line goes to everyone as `<NICK> LINE`.
//! It is not chatd and must never serve people: no telnet, charset, commands, rooms, flood
//! control, privilege drop, seals or restarts; a reader the ring laps simply exits. SIGTERM to
//! the master ends its whole process group.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener, UnixStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};

use clap::Parser;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::libc;

/// The header page: its first word is the published position.
const HEADER: usize = 4096;
/// The data region: records `[u32 length][bytes][padding to 4]` at position % DATA.
const DATA: usize = 1 << 20;
/// The longest line a client may send and the longest nick; longer ones are cut.
const LINE_MAX: usize = 1024;
const NICK_MAX: usize = 32;
/// The longest record: a line with its nick and decoration.
const RECORD_MAX: usize = LINE_MAX + NICK_MAX + 32;
/// The broker publishes at least this often (in bytes) within a loop turn, so that the bytes it
/// has written but not published stay below it: what a reader's lap check relies on.
const PUBLISH_EVERY: u64 = DATA as u64 / 4;
/// A reader further behind than this (positions) may read bytes being overwritten: lapped.
const MAX_LAG: u64 = DATA as u64 / 2;

#[derive(Parser)]
#[command(name = "chatd-floor", about = "The floor of chatd's shape, for the benchmark only")]
struct Cli {
    #[arg(long, default_value = "127.0.0.1:2323")]
    listen: SocketAddr,
}

/// A mapping of the ring: the header and the data region.
struct Ring {
    base: *mut u8,
}

impl Ring {
    fn map(fd: BorrowedFd<'_>, writable: bool) -> io::Result<Ring> {
        let protection =
            if writable { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_READ };
        // SAFETY: a fresh shared mapping of a file we sized to HEADER + DATA; no Rust object
        // aliases it, and it is never unmapped (it lives as long as the process).
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                HEADER + DATA,
                protection,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Ring { base: base.cast() })
    }

    fn published(&self) -> &AtomicU64 {
        // SAFETY: the header page starts page-aligned, so its first 8 bytes are a valid,
        // aligned AtomicU64 for the life of the mapping; every process only accesses it
        // atomically.
        unsafe { &*self.base.cast::<AtomicU64>() }
    }

    /// The two pieces (offset in the data region, length) of `len` bytes at `position`.
    fn pieces(position: u64, len: usize) -> [(usize, usize); 2] {
        let at = (position % DATA as u64) as usize;
        let first = len.min(DATA - at);
        [(at, first), (0, len - first)]
    }

    fn copy_in(&self, position: u64, bytes: &[u8]) {
        let mut done = 0;
        for (at, len) in Self::pieces(position, bytes.len()) {
            // SAFETY: `pieces` keeps [at, at + len) inside the data region, which this
            // process mapped writable (only the broker calls this); readers never write it.
            unsafe {
                let to = self.base.add(HEADER + at);
                std::ptr::copy_nonoverlapping(bytes[done..].as_ptr(), to, len);
            }
            done += len;
        }
    }

    fn copy_out(&self, position: u64, bytes: &mut [u8]) {
        let mut done = 0;
        for (at, len) in Self::pieces(position, bytes.len()) {
            // SAFETY: [at, at + len) is inside the mapped data region. The broker may be
            // overwriting it if we were lapped: then the bytes are garbage, which the lap
            // check after copying detects before any of them is used.
            unsafe {
                let from = self.base.add(HEADER + at);
                std::ptr::copy_nonoverlapping(from, bytes[done..].as_mut_ptr(), len);
            }
            done += len;
        }
    }
}

fn record_size(len: usize) -> u64 {
    (4 + len).next_multiple_of(4) as u64
}

/// The broker's end: appends records, publishes them.
struct RingWriter {
    ring: Ring,
    /// Where the next record goes (published or not).
    end: u64,
}

impl RingWriter {
    fn append(&mut self, parts: &[&[u8]]) {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        self.ring.copy_in(self.end, &(len as u32).to_le_bytes());
        let mut at = self.end + 4;
        for part in parts {
            self.ring.copy_in(at, part);
            at += part.len() as u64;
        }
        self.end += record_size(len);
        if self.end - self.ring.published().load(Ordering::Relaxed) >= PUBLISH_EVERY {
            self.publish();
        }
    }

    fn publish(&self) {
        self.ring.published().store(self.end, Ordering::Release);
    }
}

/// A client process's end: copies what is new.
struct RingReader {
    ring: Ring,
    position: u64,
}

struct Lapped;

impl RingReader {
    /// Appends every published record's bytes to `out`.
    fn drain_into(&mut self, out: &mut Vec<u8>) -> Result<(), Lapped> {
        let start = self.position;
        let end = self.ring.published().load(Ordering::Acquire);
        if end.wrapping_sub(start) > MAX_LAG {
            return Err(Lapped);
        }
        while self.position < end {
            let mut len = [0u8; 4];
            self.ring.copy_out(self.position, &mut len);
            let len = u32::from_le_bytes(len) as usize;
            if len > RECORD_MAX {
                return Err(Lapped);
            }
            let at = out.len();
            out.resize(at + len, 0);
            self.ring.copy_out(self.position + 4, &mut out[at..]);
            self.position += record_size(len);
        }
        // What was copied is whole unless the broker wrote past `start + DATA` meanwhile.
        fence(Ordering::Acquire);
        let now = self.ring.published().load(Ordering::Acquire);
        if now.wrapping_sub(start) > MAX_LAG { Err(Lapped) } else { Ok(()) }
    }
}

const LISTENER: Token = Token(usize::MAX);

/// One client process's link, as the broker sees it.
struct Member {
    link: mio::net::UnixStream,
    pending: Vec<u8>,
    /// Set by the first line.
    nick: Option<Vec<u8>>,
}

impl Member {
    /// Appends a record for each whole line received; false once the link is closed.
    fn read(&mut self, chunk: &mut [u8], ring: &mut RingWriter) -> bool {
        loop {
            match self.link.read(chunk) {
                Ok(0) => return false,
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
                Err(err) if err.kind() == ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        let mut start = 0;
        while let Some(end) = self.pending[start..].iter().position(|&b| b == b'\n') {
            let line = &self.pending[start..start + end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let line = &line[..line.len().min(LINE_MAX)];
            match &self.nick {
                Some(nick) => ring.append(&[b"<", nick, b"> ", line, b"\r\n"]),
                None => {
                    let nick = &line[..line.len().min(NICK_MAX)];
                    ring.append(&[b"*** ", nick, b" has joined lobby\r\n"]);
                    self.nick = Some(nick.to_vec());
                }
            }
            start += end + 1;
        }
        self.pending.drain(..start);
        true
    }
}

fn broker(listener: UnixListener, mut ring: RingWriter, doorbell: OwnedFd) -> io::Result<()> {
    let mut poll = Poll::new()?;
    listener.set_nonblocking(true)?;
    let mut listener = mio::net::UnixListener::from_std(listener);
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut members: Vec<Option<Member>> = Vec::new();
    let mut events = Events::with_capacity(1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match poll.poll(&mut events, None) {
            Err(err) if err.kind() == ErrorKind::Interrupted => continue,
            result => result?,
        }
        let before = ring.end;
        for event in &events {
            if event.token() == LISTENER {
                while let Ok((mut link, _)) = listener.accept() {
                    let id = members.iter().position(Option::is_none).unwrap_or(members.len());
                    poll.registry().register(&mut link, Token(id), Interest::READABLE)?;
                    let member = Member { link, pending: Vec::new(), nick: None };
                    match members.get_mut(id) {
                        Some(slot) => *slot = Some(member),
                        None => members.push(Some(member)),
                    }
                }
                continue;
            }
            let Some(slot) = members.get_mut(event.token().0) else { continue };
            let Some(member) = slot else { continue };
            if !member.read(&mut chunk, &mut ring) {
                if let Some(nick) = &member.nick {
                    ring.append(&[b"*** ", nick, b" has left lobby\r\n"]);
                }
                let _ = poll.registry().deregister(&mut member.link);
                *slot = None;
            }
        }
        if ring.end != before {
            ring.publish();
            nix::unistd::write(&doorbell, &1u64.to_ne_bytes())?;
        }
    }
}

const CLIENT: Token = Token(0);
const DOORBELL: Token = Token(1);

/// One client: its lines to the broker, the ring to it.
fn serve(
    client: std::net::TcpStream,
    broker: &str,
    mut ring: RingReader,
    doorbell: BorrowedFd,
) -> io::Result<()> {
    let mut link = UnixStream::connect_addr(&UnixAddr::from_abstract_name(broker)?)?;
    client.set_nonblocking(true)?;
    client.set_nodelay(true)?;
    let mut client = mio::net::TcpStream::from_std(client);
    let mut poll = Poll::new()?;
    poll.registry().register(&mut client, CLIENT, Interest::READABLE | Interest::WRITABLE)?;
    let raw = doorbell.as_raw_fd();
    poll.registry().register(&mut SourceFd(&raw), DOORBELL, Interest::READABLE)?;
    let mut events = Events::with_capacity(8);
    let (mut input, mut out) = (Vec::with_capacity(4096), Vec::with_capacity(64 * 1024));
    let (mut written, mut logged_in) = (0, false);
    out.extend_from_slice(b"chatd-floor: your nick?\r\n");
    loop {
        if events.iter().any(|e| e.token() == CLIENT && e.is_readable()) {
            let mut chunk = [0u8; 4096];
            loop {
                match client.read(&mut chunk) {
                    Ok(0) => return Ok(()),
                    Ok(n) => input.extend_from_slice(&chunk[..n]),
                    Err(err) if err.kind() == ErrorKind::WouldBlock => break,
                    Err(err) if err.kind() == ErrorKind::Interrupted => {}
                    Err(err) => return Err(err),
                }
                if input.len() > LINE_MAX && !input.contains(&b'\n') {
                    input.truncate(LINE_MAX);
                    input.push(b'\n');
                }
            }
            if let Some(last) = input.iter().rposition(|&b| b == b'\n') {
                if !logged_in {
                    // The join record comes after this position: the client sees it first.
                    ring.position = ring.ring.published().load(Ordering::Acquire);
                    logged_in = true;
                }
                link.write_all(&input[..=last])?;
                input.drain(..=last);
            }
        }
        // Everything new in one write, once what the client was sent before is gone.
        loop {
            if written == out.len() {
                out.clear();
                written = 0;
                if logged_in && ring.drain_into(&mut out).is_err() {
                    return Err(io::Error::other("lapped by the ring: too slow"));
                }
                if out.is_empty() {
                    break;
                }
            }
            match client.write(&out[written..]) {
                Ok(n) => written += n,
                Err(err) if err.kind() == ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        match poll.poll(&mut events, None) {
            Err(err) if err.kind() == ErrorKind::Interrupted => events.clear(),
            result => result?,
        }
    }
}

/// Whether SIGTERM may end the process group: only if the master leads its own.
static LEADS_GROUP: AtomicBool = AtomicBool::new(false);

extern "C" fn end_group(_: libc::c_int) {
    // SAFETY: signal, kill and _exit are async-signal-safe; SIGTERM is ignored first so that
    // the group's signal does not re-enter this handler.
    unsafe {
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
        if LEADS_GROUP.load(Ordering::Relaxed) {
            libc::kill(0, libc::SIGTERM);
        }
        libc::_exit(0);
    }
}

/// In a fresh child: default signals, and death with the master.
fn become_child() {
    // SAFETY: plain system calls with constant arguments, in a child of a single-threaded
    // process.
    unsafe {
        libc::signal(libc::SIGTERM, libc::SIG_DFL);
        libc::signal(libc::SIGINT, libc::SIG_DFL);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
}

fn run(cli: &Cli) -> io::Result<()> {
    // SAFETY: the master is single-threaded; the handler only calls async-signal-safe functions.
    unsafe {
        if libc::setpgid(0, 0) == 0 || libc::getpgrp() == libc::getpid() {
            LEADS_GROUP.store(true, Ordering::Relaxed);
        }
        libc::signal(libc::SIGTERM, end_group as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, end_group as *const () as libc::sighandler_t);
        // Children are reaped by the kernel.
        libc::signal(libc::SIGCHLD, libc::SIG_IGN);
    }
    let listener = TcpListener::bind(cli.listen)?;
    eprintln!("chatd-floor: listening on {}", listener.local_addr()?);
    // SAFETY: memfd_create and eventfd return a new descriptor or -1; nothing else owns it.
    let (memfd, doorbell) = unsafe {
        let memfd = libc::memfd_create(c"chatd-floor-ring".as_ptr(), libc::MFD_CLOEXEC);
        let doorbell = libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK);
        if memfd < 0 || doorbell < 0 {
            return Err(io::Error::last_os_error());
        }
        (OwnedFd::from_raw_fd(memfd), OwnedFd::from_raw_fd(doorbell))
    };
    nix::unistd::ftruncate(&memfd, (HEADER + DATA) as i64)?;
    let reader = Ring::map(memfd.as_fd(), false)?;
    let broker_name = format!("chatd-floor-{}", std::process::id());
    let broker_listener = UnixListener::bind_addr(&UnixAddr::from_abstract_name(&broker_name)?)?;
    // SAFETY: single-threaded, so the child may do anything the parent could.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => {
            become_child();
            drop(listener);
            let _ = nix::sys::prctl::set_name(c"floor-broker");
            let ring = RingWriter { ring: Ring::map(memfd.as_fd(), true)?, end: 0 };
            let result = broker(broker_listener, ring, doorbell);
            eprintln!("chatd-floor broker: {result:?}");
            // SAFETY: ends the broker without running the master's exit path.
            unsafe { libc::_exit(1) }
        }
        nix::unistd::ForkResult::Parent { .. } => drop((memfd, broker_listener)),
    }
    loop {
        let (client, _) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(err) if err.kind() == ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        // SAFETY: single-threaded, so the child may do anything the parent could.
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => {
                become_child();
                drop(listener);
                let position = reader.published().load(Ordering::Acquire);
                let ring = RingReader { ring: reader, position };
                let result = serve(client, &broker_name, ring, doorbell.as_fd());
                // A client that leaves without reading resets its connection: no news.
                if let Err(err) = &result
                    && !matches!(err.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe)
                {
                    eprintln!("chatd-floor client: {err}");
                }
                let code = i32::from(result.is_err());
                // SAFETY: ends the client process without running the master's exit path.
                unsafe { libc::_exit(code) }
            }
            Ok(nix::unistd::ForkResult::Parent { .. }) => drop(client),
            Err(err) => eprintln!("chatd-floor: fork: {err}"),
        }
    }
}

fn main() -> ExitCode {
    match run(&Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("chatd-floor: {err}");
            ExitCode::FAILURE
        }
    }
}
