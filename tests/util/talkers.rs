//! Crowds of clients that chat while a test does something to the daemon underneath them
//! (kills the broker, upgrades the master), and the check that every numbered line they said
//! reached every listener exactly once, in order.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use super::{Client, login};

/// Logs in `total` clients, `u0`, `u1`, ..., dealt round-robin over `rooms` (each joins its
/// room after logging in to lobby); returns each with its nick and room.
pub fn crowd<'r>(port: u16, total: usize, rooms: &[&'r str]) -> Vec<(Client, String, &'r str)> {
    (0..total)
        .map(|i| {
            let nick = format!("u{i}");
            let room = rooms[i % rooms.len()];
            let mut client = login(port, &nick);
            if room != "lobby" {
                client.send(&format!("/join {room}"));
                client.expect(&format!("*** {nick} has joined {room}"));
            }
            (client, nick, room)
        })
        .collect()
}

/// Numbered lines received by one talker: sender nick → numbers, in arrival order; `done X`
/// once X said its last.
pub type Received = Arc<Mutex<HashMap<String, Vec<u64>>>>;

/// A client that talks and listens on threads of its own: a writer that says "NICK N" at a
/// steady pace until told to stop, then "done NICK", and a reader that records every numbered
/// line it hears, every `***` notice, and whether the connection closed.
pub struct Talker {
    pub nick: String,
    /// How many numbered lines the writer sent.
    pub sent: Arc<Mutex<u64>>,
    pub received: Received,
    /// Every `***` line heard since the talker started, in order.
    pub notices: Arc<Mutex<Vec<String>>>,
    /// Set when the server closed the connection.
    pub closed: Arc<AtomicBool>,
    pub writer: thread::JoinHandle<()>,
    /// Ends when the server closes the connection.
    pub reader: thread::JoinHandle<()>,
}

impl Talker {
    /// Starts the threads of a logged-in client, which says a line every `pace` until `stop`.
    /// Every client of a crowd logs in before any starts talking, so that no numbered line is
    /// read ahead by the login helper (whose buffer is dropped here) and lost.
    pub fn start(client: Client, nick: &str, pace: Duration, stop: Arc<AtomicBool>) -> Talker {
        let stream = client.stream;
        let mut write_half = stream.try_clone().expect("clone");
        let sent = Arc::new(Mutex::new(0u64));
        let received: Received = Arc::default();
        let notices: Arc<Mutex<Vec<String>>> = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        let writer = {
            let sent = Arc::clone(&sent);
            let nick = nick.to_string();
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let mut count = sent.lock().expect("lock");
                    *count += 1;
                    if write_half.write_all(format!("{nick} {}\r\n", *count).as_bytes()).is_err() {
                        return;
                    }
                    drop(count);
                    // The pace of the conversation, not a wait for anything.
                    thread::sleep(pace);
                }
                let _ = write_half.write_all(format!("done {nick}\r\n").as_bytes());
            })
        };
        let reader = {
            let received = Arc::clone(&received);
            let notices = Arc::clone(&notices);
            let closed = Arc::clone(&closed);
            thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                loop {
                    line.clear();
                    match reader.read_line(&mut line) {
                        Ok(0) => break,
                        Ok(_) => {}
                        // A quiet spell (the read timeout) is not the end of the connection.
                        Err(err)
                            if matches!(
                                err.kind(),
                                ErrorKind::WouldBlock | ErrorKind::TimedOut
                            ) =>
                        {
                            continue;
                        }
                        Err(_) => break,
                    }
                    // A line that names the listener ends with a bell.
                    let text = line.trim_end().trim_end_matches('\x07');
                    if text.starts_with("*** ") {
                        notices.lock().expect("lock").push(text.to_string());
                        continue;
                    }
                    // "<nick> nick N" is a numbered line; "<x> done x" ends x's stream.
                    let Some(rest) = text.strip_prefix('<') else { continue };
                    let Some((from, said)) = rest.split_once("> ") else { continue };
                    let mut map = received.lock().expect("lock");
                    if let Some(number) =
                        said.strip_prefix(&format!("{from} ")).and_then(|n| n.parse().ok())
                    {
                        map.entry(from.to_string()).or_default().push(number);
                    } else if said == format!("done {from}") {
                        map.entry(format!("done {from}")).or_default().push(0);
                    }
                }
                closed.store(true, Ordering::Relaxed);
            })
        };
        Talker { nick: nick.to_string(), sent, received, notices, closed, writer, reader }
    }

    /// Whether this talker heard `nick` say its last line.
    pub fn heard_done_from(&self, nick: &str) -> bool {
        self.received.lock().expect("lock").contains_key(&format!("done {nick}"))
    }

    /// Asserts that this talker heard every numbered line `sender` sent, once each, in order
    /// (once the sender said its last: [`Talker::heard_done_from`]).
    pub fn assert_heard_every_line_of(&self, sender: &Talker) {
        let sent = *sender.sent.lock().expect("lock");
        let got =
            self.received.lock().expect("lock").get(&sender.nick).cloned().unwrap_or_default();
        let want: Vec<u64> = (1..=sent).collect();
        assert!(
            got == want,
            "{} heard {} lines of {} (of {sent}); first difference at {:?}",
            self.nick,
            got.len(),
            sender.nick,
            got.iter().zip(&want).position(|(a, b)| a != b)
        );
    }
}
