//! A throwaway PostgreSQL server for tests: a cluster of its own in a temporary directory,
//! made with Debian's `initdb` and run by `pg_ctl` as the `postgres` user (when the tests run
//! as root; as the test's own user otherwise), reachable only through a Unix socket in that
//! directory, with one database `chatd` owned by the superuser `chatd`.
//!
//! Two kinds of test use it: the store's unit tests (`store::postgres`), and the behaviour
//! tests, which cannot see the library's `cfg(test)` code and include this file by path
//! (`tests/util/postgres.rs`). So it uses nothing but std, nix and tempfile, and names
//! nothing of chatd.
//!
//! What it must not do: listen on TCP, touch any cluster but its own, skip a test because
//! PostgreSQL is missing (it fails the test instead, saying what to install), or outlive its
//! test: dropping it stops the server and kills whatever of it is left.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The superuser, and the database the tests use.
const USER: &str = "chatd";
const DATABASE: &str = "chatd";
/// How long the server may take to start or stop, and its processes to be gone.
const PATIENCE: Duration = Duration::from_secs(30);

/// A running PostgreSQL server of a test's own.
pub struct Cluster {
    /// Holds the socket, the server's log and (in `data/`) the cluster; removed at drop.
    dir: tempfile::TempDir,
    /// Where Debian put `initdb`, `pg_ctl`, `psql` (`/usr/lib/postgresql/N/bin`).
    bin: PathBuf,
    /// The superuser's password, when the server asks for one.
    password: Option<String>,
    /// Every server process seen (pid and start time, which tells a reused pid apart): what
    /// the drop kills if stopping did not end it.
    seen: Vec<(i32, u64)>,
}

impl Cluster {
    /// Starts a server that trusts every local connection.
    pub fn start() -> Cluster {
        Self::create(None)
    }

    /// Starts a server that wants `password` (SCRAM) from every connection.
    pub fn start_with_password(password: &str) -> Cluster {
        Self::create(Some(password))
    }

    fn create(password: Option<&str>) -> Cluster {
        let bin = postgres_bin();
        let dir = tempfile::Builder::new()
            .prefix("chatd-pg-")
            .tempdir()
            .unwrap_or_else(|err| panic!("a temporary directory for PostgreSQL: {err}"));
        // The server's own user owns the directory; everyone may reach the socket in it
        // (a chatd under test has dropped root to `nobody`).
        if nix::unistd::geteuid().is_root() {
            let owner =
                nix::unistd::User::from_name("postgres").ok().flatten().unwrap_or_else(|| {
                    panic!("no user `postgres`: is the `postgresql` package installed?")
                });
            nix::unistd::chown(dir.path(), Some(owner.uid), Some(owner.gid))
                .unwrap_or_else(|err| panic!("chown {} to postgres: {err}", dir.path().display()));
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|err| panic!("chmod {}: {err}", dir.path().display()));
        let mut cluster =
            Cluster { dir, bin, password: password.map(str::to_string), seen: Vec::new() };
        cluster.initdb();
        cluster.start_again();
        let createdb = cluster.client_command("createdb").arg(DATABASE).output();
        cluster.check("createdb", createdb);
        cluster
    }

    fn initdb(&self) {
        let data = self.data();
        let mut initdb = self.as_server_user("initdb");
        initdb.arg("-D").arg(&data).args([
            "-U",
            USER,
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            "--auth=trust",
        ]);
        let password_file = self.dir.path().join("initdb-password");
        if let Some(password) = &self.password {
            std::fs::write(&password_file, password)
                .unwrap_or_else(|err| panic!("write {}: {err}", password_file.display()));
            initdb
                .arg("--auth-local=scram-sha-256")
                .arg(format!("--pwfile={}", password_file.display()));
        }
        let output = initdb.output();
        let _ = std::fs::remove_file(&password_file);
        self.check("initdb", output);
    }

    /// A `postgres://` URL for this server's database, through its socket.
    pub fn url(&self) -> String {
        format!("postgres://{USER}@/{DATABASE}?host={}", self.dir.path().display())
    }

    /// The directory the server's socket is in.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Where PostgreSQL's programs are (`psql`, ...).
    #[allow(dead_code, reason = "the behaviour tests' (tests/storage_harness), not the store's")]
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// Starts the server after [`stop`](Self::stop) (and at creation).
    pub fn start_again(&mut self) {
        let options = format!(
            "-k '{}' -c listen_addresses='' -c fsync=off -c full_page_writes=off",
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        let mut pg_ctl = self.as_server_user("pg_ctl");
        pg_ctl.arg("-D").arg(self.data()).arg("-l").arg(log).arg("-o").arg(options);
        let output = pg_ctl.args(["-w", "-t", "30", "start"]).output();
        self.check("pg_ctl start", output);
        self.remember_processes();
    }

    /// Stops the server (fast: open connections are ended, as a restart does).
    pub fn stop(&mut self) {
        self.remember_processes();
        let output = self.pg_ctl_stop("fast");
        self.check("pg_ctl stop", output);
    }

    /// Stops and starts the server: every connection to it is lost.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Runs SQL in the database with `psql` and returns its unaligned output, trimmed.
    pub fn psql(&self, sql: &str) -> String {
        let output = self
            .client_command("psql")
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", DATABASE, "-c", sql])
            .output();
        let output = self.check(&format!("psql -c {sql:?}"), output);
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    /// The server's processes still running (none once the cluster is dropped).
    pub fn processes(&self) -> Vec<i32> {
        let mut seen = self.seen.clone();
        seen.extend(self.current_processes());
        let mut alive: Vec<i32> = seen
            .into_iter()
            .filter(|&(pid, started)| start_time(pid) == Some(started))
            .map(|(pid, _)| pid)
            .collect();
        alive.sort_unstable();
        alive.dedup();
        alive
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A command run as the user that owns the cluster (initdb refuses to run as root).
    fn as_server_user(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if nix::unistd::geteuid().is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    /// A client program connecting to this server as its superuser.
    fn client_command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        command.arg("-h").arg(self.dir.path()).args(["-U", USER]);
        // Nothing from the environment of whoever runs the tests.
        for variable in ["PGPASSWORD", "PGPASSFILE", "PGSERVICE", "PGDATABASE", "PGOPTIONS"] {
            command.env_remove(variable);
        }
        if let Some(password) = &self.password {
            command.env("PGPASSWORD", password);
        }
        command
    }

    fn pg_ctl_stop(&self, mode: &str) -> std::io::Result<Output> {
        let mut pg_ctl = self.as_server_user("pg_ctl");
        pg_ctl.arg("-D").arg(self.data()).args(["-m", mode, "-w", "-t", "30", "stop"]).output()
    }

    /// The server's output if it succeeded; otherwise fails the test with what the program
    /// and the server said.
    fn check(&self, what: &str, output: std::io::Result<Output>) -> Output {
        match output {
            Ok(output) if output.status.success() => output,
            Ok(output) => panic!(
                "{what} failed ({}):\n{}{}\nserver log:\n{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
                self.server_log()
            ),
            Err(err) => panic!("cannot run {what}: {err}"),
        }
    }

    fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Notes the server's processes now (the postmaster and its children), for the drop.
    fn remember_processes(&mut self) {
        for process in self.current_processes() {
            if !self.seen.contains(&process) {
                self.seen.push(process);
            }
        }
    }

    /// The postmaster named in the cluster's pid file, and its children.
    fn current_processes(&self) -> Vec<(i32, u64)> {
        let pid_file =
            std::fs::read_to_string(self.data().join("postmaster.pid")).unwrap_or_default();
        let Some(postmaster) =
            pid_file.lines().next().and_then(|line| line.trim().parse::<i32>().ok())
        else {
            return Vec::new();
        };
        let mut found: Vec<(i32, u64)> = Vec::new();
        let entries = std::fs::read_dir("/proc").into_iter().flatten().flatten();
        for pid in entries.filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok()) {
            let Some((parent, started)) = parent_and_start_time(pid) else { continue };
            if pid == postmaster || parent == postmaster {
                found.push((pid, started));
            }
        }
        found
    }
}

impl Drop for Cluster {
    /// Stops the server at once, then kills whatever of it is still there and waits until it
    /// is gone; the temporary directory goes after.
    fn drop(&mut self) {
        self.remember_processes();
        let _ = self.pg_ctl_stop("immediate");
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = self.processes();
            if left.is_empty() || Instant::now() > deadline {
                break;
            }
            for pid in left {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The newest PostgreSQL's programs directory; fails the test if there is none.
pub fn postgres_bin() -> PathBuf {
    postgres_bin_in(Path::new("/usr/lib/postgresql"))
}

/// The programs directory of the newest version under `versions` (Debian's layout:
/// `VERSIONS/N/bin/initdb`).
pub fn postgres_bin_in(versions: &Path) -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(versions)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "this test needs PostgreSQL, and there is no {}/*/bin/initdb: install the \
             `postgresql` package (apt-get install postgresql; .ci/run does)",
            versions.display()
        ),
    }
}

/// Whether `pid` is a process still running (a zombie is not: it is gone but for its entry,
/// which only its parent, init for a server's processes, removes).
pub fn is_running(pid: i32) -> bool {
    start_time(pid).is_some()
}

/// A live (not zombie) process's start time, in clock ticks since boot.
fn start_time(pid: i32) -> Option<u64> {
    parent_and_start_time(pid).map(|(_, started)| started)
}

/// A live process's parent and start time, from `/proc/PID/stat`.
fn parent_and_start_time(pid: i32) -> Option<(i32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces: the fields after it are plain.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the name: state, ppid, ... and start time the 20th.
    if fields.first() == Some(&"Z") {
        return None;
    }
    Some((fields.get(1)?.parse().ok()?, fields.get(19)?.parse().ok()?))
}
