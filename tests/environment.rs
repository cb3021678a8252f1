//! Bad configuration and environment (issue 9): malformed config, unknown
//! keys, non-UTF-8 bytes and paths, missing / unreadable / odd `$HOME`, a
//! repository on a read-only mount, stdin/stdout that are not terminals (and
//! a stdout nobody reads). Each is a clear error naming the thing to fix,
//! with the documented exit code, or a normal result; never a panic
//! (exit 70 / 101) or a signal.

mod common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{exe, is_root, parse_envelope, set_mode, skip_unless_required, TestEnv};
use serde_json::Value;

const ALL: [&str; 7] = [
    "backup-checkpoint",
    "backup-create",
    "backup-list",
    "backup-verify",
    "backup-restore",
    "backup-rollback",
    "backup-prune",
];

/// Arguments that make each binary do real work.
fn args_for(bin: &str) -> Vec<&'static str> {
    match bin {
        "backup-checkpoint" => vec!["manual", "x"],
        "backup-restore" => vec!["latest", "--target", "/nonexistent-dfb-target"],
        "backup-rollback" => vec!["latest", "--dry-run"],
        _ => vec![],
    }
}

fn with_config(text: &[u8]) -> TestEnv {
    let env = TestEnv::with_dotfiles();
    let p = env.home.join(".config/dotfiles-backup/config.toml");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    env
}

fn error_of(v: &Value) -> (String, String) {
    let e = &v["errors"][0];
    (
        e["code"].as_str().unwrap_or("").to_string(),
        format!("{} {}", e["message"], e["hint"]),
    )
}

#[test]
fn malformed_config_is_a_usage_error_naming_the_file_for_every_command() {
    let cases: [(&str, &[u8]); 5] = [
        ("syntax", b"[track\nconfig = [\"~/.zshrc\"\n"),
        ("wrong type", b"[track]\nconfig = 5\n"),
        ("not utf-8", b"[track]\nconfig = [\"~/caf\xe9\"]\n"),
        ("binary", b"\x00\x01\x02\xff"),
        ("nul in string", b"[track]\nconfig = [\"~/a\\u0000b\"]\n"),
    ];
    for (what, text) in cases {
        let env = with_config(text);
        for bin in ALL {
            let (code, v, stderr) = env.run(bin, &args_for(bin), &[]);
            assert_eq!(code, 2, "{what} via {bin}: {v:#}\n{stderr}");
            let (_, msg) = error_of(&v);
            assert!(
                msg.contains("config.toml") || msg.contains("track.config"),
                "{what} via {bin}: the error names the file or the key: {msg}"
            );
        }
    }
}

#[test]
fn unknown_keys_are_named() {
    for (text, key) in [
        (&b"[track]\nconfg = []\n"[..], "confg"),
        (&b"[trak]\nconfig = []\n"[..], "trak"),
        (&b"[retention]\nkeep_forever = true\n"[..], "keep_forever"),
    ] {
        let env = with_config(text);
        let (code, v, _) = env.run("backup-checkpoint", &["manual", "x"], &[]);
        assert_eq!(code, 2, "{v:#}");
        let (_, msg) = error_of(&v);
        assert!(msg.contains(key), "names {key}: {msg}");
        assert!(!env.repo.exists(), "nothing was created");
    }
}

#[test]
fn non_utf8_paths_work_as_arguments_and_names_and_are_refused_in_variables() {
    let env = TestEnv::with_dotfiles();
    std::fs::write(
        env.home.join(OsStr::from_bytes(b".config/caf\xe9")),
        b"latin1\n",
    )
    .unwrap();
    let cfg = env.tmp.path().join(OsStr::from_bytes(b"c\xfffg.toml"));
    std::fs::write(&cfg, b"[track]\nconfig = [\"~/.zshrc\", \"~/.config\"]\n").unwrap();
    let repo = env.tmp.path().join(OsStr::from_bytes(b"re\xffpo"));
    // As arguments (--config, --repo, --target) non-UTF-8 paths work.
    let run = |bin: &str, args: &[&OsStr], extra: &[(&str, &OsStr)]| -> (i32, Value) {
        let mut cmd = Command::new(exe(bin));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &env.home)
            .arg("--json")
            .arg("--config")
            .arg(&cfg)
            .arg("--repo")
            .arg(&repo)
            .args(args);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        parse_envelope(&cmd.output().unwrap())
    };
    let (c, v) = run(
        "backup-checkpoint",
        &["manual".as_ref(), "one".as_ref()],
        &[],
    );
    assert_eq!(c, 0, "{v:#}");
    let target = env.tmp.path().join(OsStr::from_bytes(b"t\xfe"));
    let (c, v) = run(
        "backup-restore",
        &["one".as_ref(), "--target".as_ref(), target.as_os_str()],
        &[],
    );
    assert_eq!(c, 0, "{v:#}");
    assert_eq!(
        std::fs::read(target.join(OsStr::from_bytes(b".config/caf\xe9"))).unwrap(),
        b"latin1\n"
    );
    let (c, v) = run("backup-verify", &["--read-data".as_ref()], &[]);
    assert_eq!(c, 0, "{v:#}");
    // In variables they would read as unset (BACKUP_REPO silently the
    // default repository): refused, naming the variable.
    for key in [
        "HOME",
        "BACKUP_REPO",
        "BACKUP_CONFIG",
        "BACKUP_AGE_IDENTITY",
    ] {
        let bad = env.tmp.path().join(OsStr::from_bytes(b"x\xff"));
        let (c, v) = run("backup-list", &[], &[(key, bad.as_os_str())]);
        assert_eq!(c, 2, "{key}: {v:#}");
        let (code, msg) = error_of(&v);
        assert_eq!(code, "bad_environment");
        assert!(msg.contains(key), "{msg}");
    }
}

#[test]
fn missing_home_is_a_clear_usage_error() {
    let env = TestEnv::new();
    for bin in ALL {
        let mut cmd = Command::new(exe(bin));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .arg("--json")
            .args(args_for(bin));
        let (code, v) = parse_envelope(&cmd.output().unwrap());
        assert_eq!(code, 2, "{bin}: {v:#}");
        let (c, msg) = error_of(&v);
        assert_eq!(c, "home_not_set", "{bin}: {v:#}");
        assert!(msg.contains("HOME"), "{msg}");
    }
    // A relative HOME is not a home either.
    let (code, v, _) = env.run(
        "backup-checkpoint",
        &["manual", "x"],
        &[("HOME", "relative/home")],
    );
    assert_eq!(code, 2, "{v:#}");
}

#[test]
fn home_that_is_missing_or_a_file_is_reported_not_panicked() {
    let env = TestEnv::new();
    let file_home = env.tmp.path().join("home-file");
    std::fs::write(&file_home, b"not a dir").unwrap();
    let missing = env.tmp.path().join("no-such-home");
    for home in [&file_home, &missing] {
        let (code, v, stderr) = env.run(
            "backup-checkpoint",
            &["manual", "x"],
            &[("HOME", home.to_str().unwrap())],
        );
        // Every tracked root is absent (recorded as such) or unreadable: a
        // normal checkpoint, or a clear error; never a crash.
        assert!([0, 1, 2, 3].contains(&code), "{v:#}\n{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn unreadable_home_is_reported_per_path() {
    if !is_root() {
        skip_unless_required(
            "root",
            "the unreadable-home test needs root to run as another uid",
        );
        return;
    }
    let env = TestEnv::with_dotfiles();
    let id = common::unprivileged_id();
    set_mode(env.tmp.path(), 0o755);
    // Owned by the unprivileged test user, and unreadable even to it.
    let repo = env.tmp.path().join("nobody-repo");
    std::fs::create_dir(&repo).unwrap();
    std::os::unix::fs::chown(&repo, Some(id), Some(id)).unwrap();
    std::fs::remove_dir(&repo).unwrap();
    let parent = env.tmp.path().join("nobody");
    std::fs::create_dir(&parent).unwrap();
    std::os::unix::fs::chown(&parent, Some(id), Some(id)).unwrap();
    std::os::unix::fs::chown(&env.home, Some(id), Some(id)).unwrap();
    set_mode(&env.home, 0o000);
    let mut cmd = env.command(
        "backup-checkpoint",
        &["--json", "manual", "x"],
        &[("BACKUP_REPO", parent.join("repo").to_str().unwrap())],
    );
    cmd.uid(id).gid(id);
    let out = cmd.output().unwrap();
    let (code, v) = parse_envelope(&out);
    set_mode(&env.home, 0o755);
    assert!(
        code == 3 || code == 1,
        "unreadable home: partial or failed, with the paths named: {v:#}"
    );
    let text = v.to_string();
    assert!(
        text.contains("ermission denied") || text.contains("unreadable"),
        "{text}"
    );
}

fn unshare_works() -> bool {
    Command::new("unshare")
        .args([
            "-rm",
            "sh",
            "-c",
            "d=$(mktemp -d) && mount -t tmpfs tmpfs \"$d\" && mount -o remount,ro \"$d\"",
        ])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn repository_on_a_read_only_mount() {
    if !unshare_works() {
        skip_unless_required(
            "tmpfs",
            "the read-only mount test needs unshare -rm with tmpfs, which is not permitted here",
        );
        return;
    }
    let env = TestEnv::with_dotfiles();
    let mnt = env.tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let bins = Path::new(exe("backup-checkpoint")).parent().unwrap();
    let t = env.tmp.path().display();
    let script = format!(
        r#"set -u; mount -t tmpfs tmpfs '{mnt}' || exit 99; export PATH='{bins}':"$PATH" HOME='{home}' BACKUP_REPO='{mnt}/repo'
        backup-checkpoint manual one -q; echo "one=$?"
        mount -o remount,ro '{mnt}' || exit 98
        echo changed > '{home}/.zshrc'
        backup-checkpoint manual two --json > '{t}/two.json'; echo "two=$?"
        backup-list --json > /dev/null; echo "list=$?"
        backup-verify --read-data --json > /dev/null; echo "verify=$?"
        backup-restore one --target '{t}/restored' --json > '{t}/restore.json'; echo "restore=$?"
        backup-rollback one --json > '{t}/rollback.json'; echo "rollback=$?"
        cat '{home}/.zshrc'"#,
        mnt = mnt.display(),
        bins = bins.display(),
        home = env.home.display(),
    );
    let out = Command::new("unshare")
        .args(["-rm", "sh", "-c", &script])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.code() != Some(99) && out.status.code() != Some(98),
        "mount failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k} in {text}"))
            .to_string()
    };
    assert_eq!(get("one"), "0", "{text}");
    let two: Value =
        serde_json::from_slice(&std::fs::read(env.tmp.path().join("two.json")).unwrap()).unwrap();
    let code: i32 = get("two").parse().unwrap();
    assert_eq!(code, 8, "checkpoint on ro: a distinct exit code: {two:#}");
    let msg = two["errors"][0].to_string();
    assert!(
        msg.contains("ead-only") && msg.contains("repo"),
        "says read-only and names the repository: {msg}"
    );
    assert_eq!(get("list"), "0", "{text}");
    assert_eq!(get("verify"), "0", "{text}");
    // Restore into --target reads only (shared lock, no safety snapshot).
    let restore: Value =
        serde_json::from_slice(&std::fs::read(env.tmp.path().join("restore.json")).unwrap())
            .unwrap();
    let rc: i32 = get("restore").parse().unwrap();
    assert_eq!(rc, 0, "restore from a read-only repository: {restore:#}");
    let rb: i32 = get("rollback").parse().unwrap();
    assert_eq!(rb, 8, "rollback needs a safety snapshot; refused: {text}");
    assert!(
        text.trim_end().ends_with("changed"),
        "the home was not touched: {text}"
    );
}

#[test]
fn not_a_tty_and_a_closed_stdout_are_fine() {
    let env = TestEnv::with_dotfiles();
    let (c, v) = env.json("backup-checkpoint", &["manual", "one"]);
    assert_eq!(c, 0, "{v:#}");
    // stdin from /dev/null, stdout and stderr pipes: human output, exit 0.
    for bin in ["backup-list", "backup-verify", "backup-checkpoint"] {
        let mut args = args_for(bin);
        if bin == "backup-checkpoint" {
            args = vec!["manual", "two"];
        }
        let out = env
            .command(bin, &args, &[])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{bin}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            !text.contains("\x1b["),
            "{bin}: no colour codes into a pipe"
        );
    }
    // stdout whose reader is gone (`backup-list | head -0`): no panic, same exit code.
    for json in [false, true] {
        let mut args = vec!["--files"];
        if json {
            args.push("--json");
        }
        let mut child = env
            .command("backup-list", &args, &[])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            out.status.code() == Some(0),
            "closed stdout (json {json}): {:?} {stderr}",
            out.status
        );
    }
    // stdin closed entirely and stdout to /dev/full: still no panic.
    let out = env
        .command("backup-list", &[], &[])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create("/dev/full").unwrap())
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("panicked"),
        "{out:?}"
    );
    assert!(out.status.code().is_some_and(|c| c != 70 && c != 101));
    // A usage error in JSON to a stdout that cannot be written: exit 2, no panic.
    let out = env
        .command("backup-rollback", &["--json", "--bogus"], &[])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create("/dev/full").unwrap())
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("panicked"),
        "{out:?}"
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn bad_environment_values_are_usage_errors() {
    let env = TestEnv::with_dotfiles();
    for (k, val) in [
        ("BACKUP_LOCK_WAIT", "soon"),
        ("BACKUP_DISABLED", "maybe"),
        ("BACKUP_REPO", ""),
        ("BACKUP_CONFIG", "/nonexistent/dfb/config.toml"),
    ] {
        let (code, v, stderr) = env.run("backup-checkpoint", &["manual", "x"], &[(k, val)]);
        // An empty BACKUP_REPO means "not set" (the default repository); a
        // missing explicit config file is a usage error naming it.
        let ok = match k {
            "BACKUP_REPO" => code == 0 || code == 2,
            _ => code == 2,
        };
        assert!(ok, "{k}={val}: {v:#}\n{stderr}");
        if code != 0 {
            let (_, msg) = error_of(&v);
            assert!(msg.contains(k) || msg.contains(val), "{k}: {msg}");
        }
    }
}
