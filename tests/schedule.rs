//! `backup-create --schedule daily|hourly|off` (issue 22 point 1) through
//! the real binary: the systemd units pass `systemd-analyze verify`, the
//! launchd plist parses with Python's plistlib, installing twice changes
//! nothing, `off` removes everything (twice: nothing), hand edits are kept
//! aside, a missing user manager is a warning naming the command, the job
//! the unit runs really checkpoints, prunes and checks health, and the
//! health check goes yellow when the scheduled run is overdue.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

const UNIT: &str = ".config/systemd/user/dotfiles-backup-scheduled";

/// A home with a space in its name, a repository path with `%` and `$`
/// (systemd specifiers and variables), and fake `systemctl`/`launchctl`
/// that log their arguments and exit with `rc`.
struct Sched {
    e: TestEnv,
    bin: PathBuf,
    log: PathBuf,
}

impl Sched {
    fn new(rc: i32) -> Sched {
        let mut e = TestEnv::new();
        e.home = e.tmp.path().join("my home");
        e.repo = e.tmp.path().join("repo 100% $HOME");
        std::fs::create_dir_all(e.home.join(".config/app")).unwrap();
        e.write(".config/app/conf", b"one\n", 0o644);
        let bin = e.tmp.path().join("fakebin");
        std::fs::create_dir(&bin).unwrap();
        let log = e.tmp.path().join("calls.log");
        for tool in ["systemctl", "launchctl"] {
            let p = bin.join(tool);
            std::fs::write(
                &p,
                format!(
                    "#!/bin/sh\necho \"{tool} $*\" >> '{}'\n[ {rc} = 0 ] || echo 'Failed to connect to bus: No medium found' >&2\nexit {rc}\n",
                    log.display()
                ),
            )
            .unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Sched { e, bin, log }
    }

    fn path(&self) -> String {
        format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    fn run(&self, args: &[&str], extra: &[(&str, &str)]) -> (i32, Value) {
        let path = self.path();
        let mut env = vec![("PATH", path.as_str())];
        env.extend_from_slice(extra);
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let (rc, v, _) = self.e.run("backup-create", &all, &env);
        (rc, v)
    }

    fn calls(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let _ = std::fs::remove_file(&self.log);
        text
    }
}

fn actions(v: &Value) -> Vec<String> {
    v["schedule"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["action"].as_str().unwrap().to_string())
        .collect()
}

fn read_units(home: &Path) -> (Vec<u8>, Vec<u8>) {
    (
        std::fs::read(home.join(format!("{UNIT}.service"))).unwrap(),
        std::fs::read(home.join(format!("{UNIT}.timer"))).unwrap(),
    )
}

/// `systemd-analyze verify --user` on both units; required in CI.
fn analyze(home: &Path) {
    let runtime = tempfile::tempdir().unwrap();
    let dir = home.join(".config/systemd/user");
    let out = Command::new("systemd-analyze")
        .args(["verify", "--user"])
        .arg(dir.join("dotfiles-backup-scheduled.timer"))
        .arg(dir.join("dotfiles-backup-scheduled.service"))
        .env("XDG_RUNTIME_DIR", runtime.path())
        .output();
    match out {
        Err(_) => skip_unless_required(
            "systemd-analyze",
            "systemd-analyze is not installed (CI installs systemd in .ci/run); the units were not verified",
        ),
        Ok(o) => assert!(
            o.status.success() && o.stderr.is_empty(),
            "systemd-analyze verify: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
    }
}

/// The service's `ExecStart=` as systemd would split and unescape it (a
/// double-quoted word, `\"`, `$$` and `%%`), through Python's shlex.
fn exec_start(home: &Path) -> Vec<String> {
    let script = r#"
import shlex, sys, json
line = [l for l in open(sys.argv[1]).read().splitlines() if l.startswith("ExecStart=")][0]
words = shlex.split(line[len("ExecStart="):])
print(json.dumps([w.replace("$$", "$").replace("%%", "%") for w in words]))
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(home.join(format!("{UNIT}.service")))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn schedule_row(e: &TestEnv, path: &str) -> Value {
    let (_, v, _) = e.run(
        "backup-checkpoint",
        &["--json", "--health-check"],
        &[("PATH", path)],
    );
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "schedule")
        .cloned()
        .unwrap_or_else(|| panic!("no schedule row: {v:#}"))
}

#[test]
fn systemd_install_twice_changes_nothing_the_job_runs_and_off_removes() {
    let s = Sched::new(0);
    let e = &s.e;
    let (rc, v) = s.run(&["--schedule", "daily"], &[]);
    assert_eq!(rc, 0, "{v:#}");
    assert_eq!(v["changed"], true);
    assert_eq!(actions(&v), ["written", "written"], "{v:#}");
    assert_eq!(v["schedule"]["activated"], true, "{v:#}");
    assert_eq!(
        s.calls(),
        "systemctl --user daemon-reload\nsystemctl --user enable --now dotfiles-backup-scheduled.timer\n"
    );
    analyze(&e.home);
    let first = read_units(&e.home);
    assert!(String::from_utf8_lossy(&first.1).contains("OnCalendar=daily"));

    let (rc, v) = s.run(&["--schedule", "daily"], &[]);
    assert_eq!(rc, 0, "{v:#}");
    assert_eq!(v["changed"], false, "{v:#}");
    assert_eq!(actions(&v), ["unchanged", "unchanged"]);
    assert_eq!(read_units(&e.home), first, "byte-identical");
    assert_eq!(
        s.calls(),
        "systemctl --user enable --now dotfiles-backup-scheduled.timer\n"
    );

    // What the timer runs, as systemd would run it: a checkpoint, prune, health.
    let argv = exec_start(&e.home);
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .env_clear()
        .env("PATH", s.path())
        .env("HOME", &e.home)
        .env("BACKUP_PACKAGES", "off")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (rc, list) = e.json("backup-list", &[]);
    assert_eq!(rc, 0, "{list:#}");
    let snap = &list["snapshots"][0];
    assert_eq!(snap["kind"], "backup", "{list:#}");
    assert_eq!(snap["label"], "scheduled", "{list:#}");
    let log = std::fs::read_to_string(e.repo.join("logs/runs.jsonl")).unwrap();
    let commands: Vec<String> = log
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["command"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        commands[..3],
        ["backup-create", "backup-prune", "backup-checkpoint"],
        "{log}"
    );
    let row = schedule_row(e, &s.path());
    assert_eq!(row["status"], "green", "{row:#}");
    assert!(
        row["message"]
            .as_str()
            .unwrap()
            .contains("last scheduled run"),
        "{row:#}"
    );

    // Three days without a run: overdue (more than two intervals), yellow.
    let old = log.replace(
        &format!(
            "\"logged_at\":\"{}",
            &log.split("\"logged_at\":\"").nth(1).unwrap()[..10]
        ),
        "\"logged_at\":\"2000-01-01",
    );
    std::fs::write(e.repo.join("logs/runs.jsonl"), old).unwrap();
    let row = schedule_row(e, &s.path());
    assert_eq!(row["status"], "yellow", "{row:#}");
    assert!(
        row["message"].as_str().unwrap().contains("overdue"),
        "{row:#}"
    );

    let (rc, v) = s.run(&["--schedule", "off"], &[]);
    assert_eq!(rc, 0, "{v:#}");
    assert_eq!(v["changed"], true);
    assert_eq!(actions(&v), ["removed", "removed"]);
    assert!(!e.home.join(format!("{UNIT}.timer")).exists());
    assert!(!e.home.join(format!("{UNIT}.service")).exists());
    assert_eq!(
        s.calls(),
        "systemctl --user disable --now dotfiles-backup-scheduled.timer\nsystemctl --user daemon-reload\n"
    );
    let (rc, v) = s.run(&["--schedule", "off"], &[]);
    assert_eq!(rc, 0, "{v:#}");
    assert_eq!(v["changed"], false);
    assert_eq!(actions(&v), ["absent", "absent"]);
    assert_eq!(s.calls(), "", "nothing to tell systemd");
    assert_eq!(schedule_row(e, &s.path())["status"], "green");
}

#[test]
fn without_a_user_manager_the_files_are_written_and_a_warning_names_the_command() {
    let s = Sched::new(1);
    let (rc, v) = s.run(&["--schedule", "hourly"], &[]);
    assert_eq!(rc, 0, "never a failed command: {v:#}");
    assert_eq!(v["changed"], true);
    assert_eq!(v["schedule"]["activated"], false);
    let w = v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["code"] == "schedule_not_activated")
        .unwrap_or_else(|| panic!("{v:#}"));
    let msg = w["message"].as_str().unwrap();
    assert!(
        msg.contains("systemctl --user daemon-reload && systemctl --user enable --now dotfiles-backup-scheduled.timer")
            && msg.contains("Failed to connect to bus"),
        "{msg}"
    );
    assert!(String::from_utf8_lossy(&read_units(&s.e.home).1).contains("OnCalendar=hourly"));
    analyze(&s.e.home);
    // Installed, never ran, fresh: green; the health check says it is pending.
    let row = schedule_row(&s.e, &s.path());
    assert_eq!(row["status"], "green", "{row:#}");
    assert!(
        row["message"]
            .as_str()
            .unwrap()
            .contains("first run pending"),
        "{row:#}"
    );
    // No systemctl at all: the same warning.
    let (rc, v, _) = s.e.run(
        "backup-create",
        &["--json", "--schedule", "daily"],
        &[("PATH", "/nonexistent")],
    );
    assert_eq!(rc, 0, "{v:#}");
    assert!(
        v["warnings"].to_string().contains("schedule_not_activated"),
        "{v:#}"
    );
}

#[test]
fn launchd_plist_parses_installs_once_and_off_removes() {
    let s = Sched::new(0);
    let e = &s.e;
    let launchd = [("BACKUP_SCHEDULER", "launchd")];
    let (rc, v) = s.run(&["--schedule", "hourly"], &launchd);
    assert_eq!(rc, 0, "{v:#}");
    assert_eq!(v["schedule"]["scheduler"], "launchd");
    assert_eq!(actions(&v), ["written"]);
    let plist = e
        .home
        .join("Library/LaunchAgents/io.dotfiles-backup.scheduled.plist");
    let script = r#"
import plistlib, sys, json
d = plistlib.load(open(sys.argv[1], "rb"))
print(json.dumps(d))
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&plist)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "plistlib: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(d["Label"], "io.dotfiles-backup.scheduled");
    assert_eq!(d["StartInterval"], 3600);
    let args = d["ProgramArguments"].as_array().unwrap();
    assert_eq!(args[0], "/bin/sh");
    assert!(
        args.contains(&Value::from(e.repo.to_str().unwrap())),
        "{d:#}"
    );
    let calls = s.calls();
    assert!(calls.contains("launchctl bootstrap gui/"), "{calls}");
    let bytes = std::fs::read(&plist).unwrap();
    let (rc, v) = s.run(&["--schedule", "hourly"], &launchd);
    assert_eq!(rc, 0, "{v:#}");
    assert_eq!(v["changed"], false);
    assert_eq!(std::fs::read(&plist).unwrap(), bytes);
    let (rc, v) = s.run(&["--schedule", "off"], &launchd);
    assert_eq!(rc, 0, "{v:#}");
    assert_eq!(actions(&v), ["removed"]);
    assert!(!plist.exists());
    assert!(s.calls().contains("launchctl bootout gui/"));
}

#[test]
fn hand_edited_files_are_kept_aside_and_a_stow_linked_config_is_followed() {
    let s = Sched::new(0);
    let e = &s.e;
    // ~/.config is a stow link into a dotfiles checkout.
    let dotfiles = e.tmp.path().join("dotfiles/.config");
    std::fs::create_dir_all(dotfiles.parent().unwrap()).unwrap();
    std::fs::rename(e.home.join(".config"), &dotfiles).unwrap();
    std::os::unix::fs::symlink(&dotfiles, e.home.join(".config")).unwrap();
    let (rc, v) = s.run(&["--schedule", "daily"], &[]);
    assert_eq!(rc, 0, "{v:#}");
    assert!(e
        .home
        .join(".config")
        .symlink_metadata()
        .unwrap()
        .is_symlink());
    assert!(dotfiles
        .join("systemd/user/dotfiles-backup-scheduled.timer")
        .is_file());
    let timer = e.home.join(format!("{UNIT}.timer"));
    let edited = std::fs::read_to_string(&timer)
        .unwrap()
        .replace("10min", "1h");
    std::fs::write(&timer, &edited).unwrap();
    let (rc, v) = s.run(&["--schedule", "daily"], &[]);
    assert_eq!(rc, 0, "{v:#}");
    assert_eq!(actions(&v), ["unchanged", "written"], "{v:#}");
    let copy = e.home.join(format!("{UNIT}.timer.edited~"));
    assert_eq!(std::fs::read_to_string(&copy).unwrap(), edited);
    assert!(
        v["warnings"].to_string().contains("schedule_file_edited"),
        "{v:#}"
    );
    // Edited again, then off: removed, the edit kept.
    std::fs::write(&timer, "# mine\n").unwrap();
    let (rc, v) = s.run(&["--schedule", "off"], &[]);
    assert_eq!(rc, 0, "{v:#}");
    assert_eq!(actions(&v), ["removed", "removed"]);
    assert_eq!(std::fs::read_to_string(&copy).unwrap(), "# mine\n");
    assert!(!timer.exists());
}

#[test]
fn an_unwritable_config_directory_fails_naming_it_and_xdg_config_home_is_used() {
    let s = Sched::new(0);
    let e = &s.e;
    // XDG_CONFIG_HOME (absolute) wins over ~/.config.
    let xdg = e.tmp.path().join("xdg");
    let xdg_s = xdg.to_str().unwrap().to_string();
    let (rc, v) = s.run(&["--schedule", "daily"], &[("XDG_CONFIG_HOME", &xdg_s)]);
    assert_eq!(rc, 0, "{v:#}");
    assert!(xdg
        .join("systemd/user/dotfiles-backup-scheduled.service")
        .is_file());
    assert!(!e.home.join(".config/systemd").exists());
    // A file where the directory must be: an error naming it, nothing else written.
    std::fs::write(e.home.join(".config/systemd"), b"").unwrap();
    let (rc, v) = s.run(&["--schedule", "daily"], &[]);
    assert_ne!(rc, 0, "{v:#}");
    assert!(
        v["errors"][0]["path"]
            .as_str()
            .unwrap()
            .contains(".config/systemd"),
        "{v:#}"
    );
}
