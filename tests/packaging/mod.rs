//! The files a distribution ships: systemd units checked by `systemd-analyze` (syntax and the
//! hardening bounds the project promises) and run-able command lines in them.

use std::path::{Path, PathBuf};
use std::process::Command;

const CHATD: &str = env!("CARGO_BIN_EXE_chatd");
const CHATCTL: &str = env!("CARGO_BIN_EXE_chatctl");

/// The units with `/usr/sbin/chatd` and `/usr/bin/chatctl` pointed at the binaries under test
/// (verify checks that ExecStart is executable), in a temporary directory.
fn units_for_this_build() -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut units = Vec::new();
    for entry in
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd")).expect("systemd/")
    {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path)
            .expect("read unit")
            .replace("/usr/sbin/chatd", CHATD)
            .replace("/usr/bin/chatctl", CHATCTL);
        let copy = dir.path().join(path.file_name().expect("name"));
        std::fs::write(&copy, text).expect("write unit");
        units.push(copy);
    }
    units.sort();
    (dir, units)
}

#[test]
fn systemd_units_pass_verify() {
    let (_dir, units) = units_for_this_build();
    assert_eq!(units.len(), 9, "{units:?}");
    // The man page comes with the package, not with a build tree.
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg("--man=no")
        .args(&units)
        .output()
        .expect("run systemd-analyze (apt-get install systemd)");
    let complaints = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && complaints.trim().is_empty(),
        "systemd-analyze verify:\n{complaints}"
    );
}

/// The overall exposure `systemd-analyze security --offline=yes` gives a unit.
fn exposure(unit: &Path) -> f64 {
    let output = Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(unit)
        .output()
        .expect("run systemd-analyze security");
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("{text}"));
    line.split(": ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{line}"))
}

#[test]
fn systemd_units_are_hardened_within_the_promised_bounds() {
    let (dir, _) = units_for_this_build();
    for (unit, bound) in [
        ("chatd.service", 1.5),
        ("chatd-broker.service", 1.5),
        ("chatd-inetd@.service", 1.0),
        ("chatd-metrics.service", 1.5),
    ] {
        let score = exposure(&dir.path().join(unit));
        assert!(score <= bound, "{unit}: exposure {score}, promised at most {bound}");
    }
}

#[test]
fn every_chatd_command_line_in_the_units_parses_and_the_shipped_config_is_valid() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/chatd.toml");
    let (_dir, units) = units_for_this_build();
    let mut checked = 0;
    for unit in units {
        let text = std::fs::read_to_string(&unit).expect("read unit");
        for line in text.lines() {
            let Some(command) =
                line.split_once('=').filter(|(key, _)| key.starts_with("Exec")).map(|(_, c)| c)
            else {
                continue;
            };
            let words: Vec<String> = command
                .split_whitespace()
                .map(|w| w.replace("/etc/chatd/chatd.toml", config))
                .collect();
            if words.first().map(String::as_str) == Some(CHATCTL) {
                use clap::Parser;
                let parsed = chatd::ctl::Ctl::try_parse_from(&words);
                assert!(parsed.is_ok(), "{}: `{command}`: {parsed:?}", unit.display());
                checked += 1;
                continue;
            }
            if words.first().map(String::as_str) != Some(CHATD) {
                continue;
            }
            // --check-config stops after parsing the whole command line and the settings.
            let mut args: Vec<&str> = words[1..].iter().map(String::as_str).collect();
            if !args.contains(&"--check-config") {
                args.push("--check-config");
            }
            let output = Command::new(CHATD).args(&args).output().expect("run chatd");
            assert!(
                output.status.success(),
                "{}: `chatd {}` failed: {}",
                unit.display(),
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
            checked += 1;
        }
    }
    assert!(checked >= 8, "only {checked} command lines found");
}

/// Compares a generated file with its committed copy; `CHATD_UPDATE_GENERATED=1` rewrites it.
fn check_generated(path: &str, generated: &str) {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    if std::env::var_os("CHATD_UPDATE_GENERATED").is_some() {
        std::fs::write(&full, generated).expect("write generated file");
        return;
    }
    let committed = std::fs::read_to_string(&full).unwrap_or_default();
    assert!(
        committed == generated,
        "{path} is out of date: run `CHATD_UPDATE_GENERATED=1 cargo test packaging` and commit it"
    );
}

#[test]
fn the_chatd_8_man_page_matches_the_command_line() {
    use clap::CommandFactory;
    let command = chatd::cli::Cli::command().name("chatd");
    let mut page = Vec::new();
    clap_mangen::Man::new(command).section("8").render(&mut page).expect("render chatd.8");
    check_generated("packaging/man/chatd.8", &String::from_utf8(page).expect("UTF-8"));
}

#[test]
fn the_chatctl_man_page_and_shell_completions_match_the_command_line() {
    use clap::CommandFactory;
    let command = || chatd::ctl::Ctl::command().name("chatctl");
    let mut page = Vec::new();
    clap_mangen::Man::new(command()).section("1").render(&mut page).expect("render chatctl.1");
    let page = String::from_utf8(page).expect("UTF-8");
    for subcommand in ["status", "who", "kick", "ban", "mute", "announce", "motd", "shutdown"] {
        assert!(page.contains(&format!("chatctl\\-{subcommand}(1)")), "{subcommand} missing");
    }
    check_generated("packaging/man/chatctl.1", &page);
    for (shell, file) in [
        (clap_complete::Shell::Bash, "chatctl.bash"),
        (clap_complete::Shell::Zsh, "_chatctl"),
        (clap_complete::Shell::Fish, "chatctl.fish"),
    ] {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut command(), "chatctl", &mut script);
        let script = String::from_utf8(script).expect("UTF-8");
        assert!(script.contains("prometheus"), "{file} lacks status --prometheus");
        check_generated(&format!("packaging/completions/{file}"), &script);
    }
}

/// chatd.toml(5), made from the commented settings file so that the two cannot disagree.
fn settings_man_page(example: &str) -> String {
    let escape = |text: &str| text.replace('\\', "\\\\").replace('-', "\\-");
    let mut page = String::from(
        ".TH CHATD.TOML 5 \"\" \"chatd\" \"File Formats\"\n.SH NAME\nchatd.toml \\- settings of the chatd chat daemon\n\
         .SH DESCRIPTION\n/etc/chatd/chatd.toml is a TOML file; every key is optional and chatd runs with the \
         defaults below when a key, or the whole file, is missing. Command\\-line options override it; SIGHUP \
         re\\-reads it; \\fBchatd \\-\\-check\\-config\\fR checks it.\n",
    );
    let mut comment: Vec<&str> = Vec::new();
    for line in example.lines() {
        if let Some(heading) = line.strip_prefix("## ") {
            page.push_str(&format!(".SH {}\n", escape(&heading.to_uppercase())));
            comment.clear();
        } else if let Some(setting) =
            line.strip_prefix('#').filter(|rest| rest.contains(" = ") && !rest.starts_with(' '))
        {
            let (key, default) = setting.split_once(" = ").unwrap_or((setting, ""));
            page.push_str(&format!(
                ".TP\n.B {}\n(default: {}) {}\n",
                escape(key),
                escape(default),
                escape(&comment.join(" "))
            ));
        } else if let Some(text) = line.strip_prefix("# ") {
            comment.push(text);
        } else if line.trim().is_empty() {
            comment.clear();
        }
    }
    page.push_str(".SH SEE ALSO\nchatd(8), chatctl(1)\n");
    page
}

#[test]
fn the_chatd_toml_5_man_page_matches_the_settings_file() {
    let example = include_str!("../../packaging/chatd.toml");
    let page = settings_man_page(example);
    assert_eq!(page.matches(".TP").count(), 47, "every key is documented");
    check_generated("packaging/man/chatd.toml.5", &page);
}

/// Runs a command and returns its standard output, failing the test with its output if it fails.
fn run(command: &mut Command) -> String {
    let output = command.output().unwrap_or_else(|err| panic!("run {command:?}: {err}"));
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
#[cfg_attr(chatd_tests_unprivileged, ignore = "needs root: installs the package")]
fn the_deb_is_lintian_clean_installs_serves_and_purges() {
    crate::util::assert_root_as_built();
    let manifest = env!("CARGO_MANIFEST_DIR");
    // A target directory of its own, so as not to wait for the cargo that runs this test.
    let target = Path::new(manifest).join("target/deb-test");
    let out = tempfile::tempdir().expect("temp dir");
    run(Command::new("cargo")
        .args(["deb", "--locked", "--output"])
        .arg(out.path())
        .current_dir(manifest)
        .env("CARGO_TARGET_DIR", &target));
    let deb = std::fs::read_dir(out.path())
        .expect("output dir")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|path| path.extension().is_some_and(|ext| ext == "deb"))
        .expect("a .deb");

    // lintian: no errors and no warnings (overrides carry their reasons).
    let lintian =
        Command::new("lintian").arg(&deb).output().expect("run lintian (apt-get install lintian)");
    let report = String::from_utf8_lossy(&lintian.stdout);
    let complaints: Vec<&str> =
        report.lines().filter(|l| l.starts_with("E:") || l.starts_with("W:")).collect();
    assert!(lintian.status.success() && complaints.is_empty(), "lintian:\n{report}");

    run(Command::new("dpkg").arg("-i").arg(&deb));
    let installed = scopeguard(|| {
        let _ = Command::new("dpkg").args(["-P", "chatd"]).output();
    });
    assert!(run(Command::new("getent").args(["passwd", "chatd"])).contains("/usr/sbin/nologin"));
    assert!(
        Path::new("/etc/chatd/chatd.toml").exists()
            && Path::new("/lib/systemd/system/chatd.service").exists()
    );
    run(Command::new("/usr/sbin/chatd").args(["--check-config", "/etc/chatd/chatd.toml"]));
    // The cluster's example files, and a node's settings among them valid as they stand.
    for example in ["redis.conf", "pg_hba.conf", "chatd.toml"] {
        let path = Path::new("/usr/share/doc/chatd/examples/cluster").join(example);
        assert!(path.exists(), "{} is not installed", path.display());
    }
    assert!(Path::new("/usr/share/doc/chatd/CLUSTER.md").exists());
    run(Command::new("/usr/sbin/chatd")
        .args(["--check-config", "/usr/share/doc/chatd/examples/cluster/chatd.toml"]));

    // The installed daemon with the packaged settings, started as root, serving on loopback.
    let port = crate::util::free_port();
    let daemon = crate::util::Spawned::spawn(Command::new("/usr/sbin/chatd").args([
        "--config",
        "/etc/chatd/chatd.toml",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--log",
        "stderr",
    ]));
    daemon.wait_for_log("running as user chatd");
    daemon.wait_for_log(&format!("listening on 127.0.0.1:{port}"));
    let [mut alice, mut bob] = crate::util::room(port, ["alice", "bob"]);
    bob.send("installed from the package");
    alice.expect("<bob> installed from the package");
    assert!(run(Command::new("getent").args(["group", "chatd-admin"])).starts_with("chatd-admin:"));
    let who = run(Command::new("/usr/bin/chatctl").arg("who"));
    assert!(who.lines().any(|l| l.starts_with("alice ")), "chatctl who:\n{who}");
    assert!(Path::new("/var/lib/chatd").is_dir(), "the state directory is created");
    for pid in crate::util::processes_in_group(daemon.pid()) {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let uid = status.lines().find_map(|l| l.strip_prefix("Uid:")).unwrap_or("").to_string();
        assert!(!uid.split_whitespace().any(|id| id == "0"), "process {pid} kept root: {uid}");
    }
    drop(daemon);

    run(Command::new("dpkg").args(["-r", "chatd"]));
    assert!(!Path::new("/usr/sbin/chatd").exists(), "binary left after dpkg -r");
    assert!(Path::new("/etc/chatd/chatd.toml").exists(), "dpkg -r keeps the conffile");
    run(Command::new("dpkg").args(["-P", "chatd"]));
    assert!(!Path::new("/etc/chatd").exists(), "dpkg -P removes the conffile");
    assert!(!Path::new("/var/lib/chatd").exists(), "dpkg -P removes the bans and mutes");
    drop(installed);
}

/// Runs `cleanup` when dropped (also when the test fails half-way).
fn scopeguard(cleanup: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(cleanup) = self.0.take() {
                cleanup();
            }
        }
    }
    Guard(Some(cleanup))
}

#[test]
fn the_rpm_builds_with_rpmbuild_and_rpmlint_finds_no_errors() {
    let manifest = env!("CARGO_MANIFEST_DIR");
    let top = tempfile::tempdir().expect("temp dir");
    run(Command::new("rpmbuild")
        .args(["-bb", "--build-in-place", "--nodeps", "--define"])
        .arg(format!("_topdir {}", top.path().display()))
        .arg("packaging/rpm/chatd.spec")
        .current_dir(manifest)
        // Shares the release build with the .deb test, not with the cargo running this test.
        .env("CARGO_TARGET_DIR", Path::new(manifest).join("target/deb-test")));
    let rpm = std::fs::read_dir(top.path().join("RPMS/x86_64"))
        .expect("RPMS/x86_64")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|path| path.extension().is_some_and(|ext| ext == "rpm"))
        .expect("an .rpm");
    let files = run(Command::new("rpm").arg("-qlp").arg(&rpm));
    for expected in [
        "/usr/sbin/chatd",
        "/etc/chatd/chatd.toml",
        "/usr/lib/systemd/system/chatd.service",
        "/usr/lib/systemd/system/chatd-inetd@.service",
        "/usr/lib/sysusers.d/chatd.conf",
        "/usr/share/man/man8/chatd.8.gz",
        "/usr/share/man/man5/chatd.toml.5.gz",
        "/usr/bin/chatctl",
        "/usr/share/man/man1/chatctl.1.gz",
        "/usr/lib/systemd/system/chatd-metrics.timer",
        "/usr/share/bash-completion/completions/chatctl",
    ] {
        assert!(
            files.lines().any(|line| line == expected),
            "{expected} missing from the rpm:\n{files}"
        );
    }
    // The documentation directory is chatd or chatd-VERSION, as the distribution's macros say.
    for doc in ["CLUSTER.md", "cluster/redis.conf", "cluster/pg_hba.conf", "cluster/chatd.toml"] {
        assert!(
            files.lines().any(|line| line.starts_with("/usr/share/doc/chatd")
                && line.ends_with(&format!("/{doc}"))),
            "{doc} missing from the rpm's documentation:\n{files}"
        );
    }
    let lint = Command::new("rpmlint")
        .arg("-r")
        .arg(Path::new(manifest).join("packaging/rpm/chatd.rpmlintrc"))
        .arg(&rpm)
        .output()
        .expect("run rpmlint (apt-get install rpmlint)");
    let report = String::from_utf8_lossy(&lint.stdout);
    assert!(!report.lines().any(|l| l.contains(": E: ")), "rpmlint errors:\n{report}");
    assert!(report.contains("0 errors"), "rpmlint:\n{report}");
}
