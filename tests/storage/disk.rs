//! A full disk: the state directory on a small tmpfs that a filler file fills. Chat carries
//! on, the failure is logged once, `/search` and `/history` say the store is not available;
//! once the filler is gone, the lines said meanwhile are written and the log says so.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{
    Found, Page, chatctl_json, history, say, search, store_line, stored, wait_stored,
    wait_until_it_works_again,
};
use crate::util::{Daemon, runtime_dir};

/// A tmpfs mounted by the test, unmounted when dropped (also when the test fails).
struct Mounted(PathBuf);

impl Mounted {
    fn tmpfs(at: &Path, options: &str) -> Mounted {
        std::fs::create_dir_all(at).expect("create the mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(at)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount -t tmpfs -o {options} tmpfs {}", at.display());
        Mounted(at.to_path_buf())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let unmounted = Command::new("umount").arg(&self.0).status().is_ok_and(|s| s.success());
        if !unmounted {
            // Something still holds a file there: detach it now, freed when let go.
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Writes zeros to `file` until the file system is full.
fn fill(file: &Path) {
    let mut filler = std::fs::File::create(file).expect("create the filler");
    for chunk in [64 * 1024, 4096, 512] {
        let zeros = vec![0u8; chunk];
        while filler.write_all(&zeros).and_then(|()| filler.sync_data()).is_ok() {}
    }
}

fn count(daemon: &Daemon, needle: &str) -> usize {
    daemon.log().iter().filter(|line| line.contains(needle)).count()
}

#[test]
#[cfg_attr(chatd_tests_unprivileged, ignore = "needs root: mounts a tmpfs")]
fn a_full_disk_stops_the_store_not_the_chat_and_writes_resume_when_there_is_room() {
    crate::util::assert_root_as_built();
    let runtime = Arc::new(runtime_dir());
    let state = runtime.path().join("state");
    let _mounted = Mounted::tmpfs(&state, "size=2m,mode=0750,uid=65534,gid=65534");
    let daemon = Daemon::start_on(Arc::clone(&runtime), "");
    let [mut alice, mut bob] = daemon.room(["alice", "bob"]);
    say(&mut alice, "alice", "before the outage");
    wait_stored(&daemon, "lobby", "before the outage");
    const FAILING: &str = "history is kept in memory";
    assert_eq!(count(&daemon, FAILING), 0, "{}", daemon.log().join("\n"));

    let filler = state.join("filler");
    fill(&filler);
    // Each line its own batch: together they need more room than the write-ahead log had.
    let outage: Vec<String> = (1..=20).map(|n| format!("during the outage {n}")).collect();
    for text in &outage {
        say(&mut alice, "alice", text);
        bob.expect(&format!("<alice> {text}"));
    }
    let failed = daemon.wait_for_log(FAILING);
    assert!(failed.contains("chatd.db"), "the error names the database: {failed}");
    // Checked at the end, so that a wrong answer here does not hide how the rest goes.
    let searched = search(&mut alice, "lobby", "outage");
    let paged = history(&mut alice, "lobby", "/history");
    let store = store_line(&daemon);
    assert!(store.starts_with("failing"), "store: {store}");
    // Retries come every 2 s: the outage lasts long enough for a few, each of which would
    // log again if the failure were not logged once; meanwhile chat goes on.
    let outage_began = Instant::now();
    while outage_began.elapsed() < Duration::from_millis(3000) {
        say(&mut bob, "bob", "still chatting");
        alice.expect("<bob> still chatting");
        let store = chatctl_json(&daemon, &["status"])["store"].clone();
        assert!(store["failing"].is_string(), "the store is failing: {store}");
        std::thread::sleep(Duration::from_millis(250));
    }

    std::fs::remove_file(&filler).expect("remove the filler");
    wait_until_it_works_again(&daemon);
    let held = wait_stored(&daemon, "lobby", "during the outage 20");
    let mut expected = vec!["before the outage".to_string()];
    expected.extend(outage.iter().cloned());
    let lines: Vec<String> = held.into_iter().filter(|text| text != "still chatting").collect();
    assert_eq!(lines, expected);
    assert!(matches!(search(&mut alice, "lobby", "outage"), Found::Lines(..)));
    assert_eq!(count(&daemon, FAILING), 1, "logged once:\n{}", daemon.log().join("\n"));
    assert_eq!(wait_until_it_works_again(&daemon), 1, "{}", daemon.log().join("\n"));
    assert!(stored(&daemon, "lobby").iter().any(|text| text == "still chatting"));
    match searched {
        Found::Refused(line) => assert!(line.contains("not available"), "{line}"),
        other => panic!("/search while the disk was full gave {other:?}"),
    }
    match paged {
        Page::Refused(line) => assert!(line.contains("not available"), "{line}"),
        other => panic!("/history while the disk was full gave {other:?}"),
    }
}
