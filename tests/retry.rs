//! Retries through the real binaries, with a fake `rclone` first on `PATH`.
//!
//! The fake (Python, no real rclone needed) serves a `fake:DIR` remote from a
//! local directory with the handful of commands the tool uses (`lsjson`,
//! `copyto`, `cat`, `moveto`, `deletefile`), and misbehaves on demand: fail
//! the first N calls with a temporary error (exit 5), fail every call with a
//! configuration error (exit 1, "didn't find section in config file"), or
//! hang on the first call (to hit the time limit). Every call is counted in
//! a file, so the tests see exactly how many attempts were made.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Instant;

use common::*;
use serde_json::Value;

const FAKE: &str = r#"#!/usr/bin/env python3
import json, os, shutil, sys, time
state = os.environ["FAKE_RCLONE_STATE"]
mode = os.environ.get("FAKE_RCLONE_MODE", "ok")
count_file = os.path.join(state, "calls")
n = int(open(count_file).read()) + 1 if os.path.exists(count_file) else 1
open(count_file, "w").write(str(n))
args = sys.argv[1:]
# Drop the global flags the tool passes (each takes a value).
while args and args[0] in ("--retries", "--low-level-retries", "--contimeout", "--timeout"):
    args = args[2:]
cmd, rest = args[0], [a for a in args[1:] if not a.startswith("-")]
if mode.startswith("fail-first-") and n <= int(mode.split("-")[2]):
    sys.stderr.write("ERROR : temporary failure: service unavailable\n")
    sys.exit(5)
if mode == "config-error":
    sys.stderr.write("Failed to create file system: didn't find section in config file\n")
    sys.exit(1)
if mode == "hang-first" and n == 1:
    time.sleep(30)
def local(p):
    assert p.startswith("fake:"), p
    return p[len("fake:"):]
if cmd == "lsjson":
    root = local(rest[0])
    if not os.path.isdir(root):
        sys.stderr.write("directory not found\n"); sys.exit(3)
    out = []
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            out.append({"Path": os.path.relpath(p, root), "Name": f, "Size": os.path.getsize(p), "IsDir": False})
    print(json.dumps(out))
elif cmd == "copyto":
    dst = local(rest[1]); os.makedirs(os.path.dirname(dst), exist_ok=True); shutil.copyfile(rest[0], dst)
elif cmd == "cat":
    sys.stdout.buffer.write(open(local(rest[0]), "rb").read())
elif cmd == "moveto":
    os.replace(local(rest[0]), local(rest[1]))
elif cmd == "deletefile":
    os.remove(local(rest[0]))
else:
    sys.stderr.write("unknown command " + cmd + "\n"); sys.exit(2)
"#;

struct Fake {
    bin_dir: PathBuf,
    state: PathBuf,
    remote: PathBuf,
}

fn fake(e: &TestEnv) -> Fake {
    let bin_dir = e.tmp.path().join("fakebin");
    let state = e.tmp.path().join("fakestate");
    std::fs::create_dir_all(&bin_dir).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    let script = bin_dir.join("rclone");
    // The interpreter itself, not a version-manager shim (pyenv's `python3`
    // takes most of a second to start on a loaded machine, longer than the
    // 1 s time limit the hung-call test sets).
    let python = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 runs");
    let python = String::from_utf8(python.stdout).unwrap();
    let fake = FAKE.replacen("/usr/bin/env python3", python.trim(), 1);
    std::fs::write(&script, fake).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    Fake {
        bin_dir,
        state,
        remote: e.tmp.path().join("remote"),
    }
}

impl Fake {
    fn calls(&self) -> u64 {
        std::fs::read_to_string(self.state.join("calls"))
            .map(|s| s.trim().parse().unwrap())
            .unwrap_or(0)
    }

    fn reset(&self) {
        let _ = std::fs::remove_file(self.state.join("calls"));
    }

    fn run(
        &self,
        e: &TestEnv,
        mode: &str,
        bin: &str,
        args: &[&str],
        extra: &[(&str, &str)],
    ) -> (i32, Value) {
        let path = format!(
            "{}:{}",
            self.bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let external = format!("cloud=rclone:fake:{}", self.remote.display());
        let state = self.state.to_string_lossy().into_owned();
        let mut env: Vec<(&str, &str)> = vec![
            ("PATH", &path),
            ("BACKUP_EXTERNAL", &external),
            ("FAKE_RCLONE_STATE", &state),
            ("FAKE_RCLONE_MODE", mode),
            ("BACKUP_RETRY_BASE_MS", "200"),
        ];
        env.extend_from_slice(extra);
        let (code, v, _) = e.run(bin, args, &env);
        (code, v)
    }
}

fn failures(v: &Value) -> &Vec<Value> {
    v["external"][0]["failures"].as_array().unwrap()
}

#[test]
fn a_remote_that_fails_twice_then_works_succeeds_on_the_third_attempt_with_growing_delays() {
    let e = TestEnv::with_dotfiles();
    let f = fake(&e);
    let started = Instant::now();
    let (code, v) = f.run(
        &e,
        "fail-first-2",
        "backup-checkpoint",
        &["manual", "x"],
        &[],
    );
    let took = started.elapsed();
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["degradation"], "full", "{v:#}");
    let t = &v["external"][0];
    assert_eq!(t["status"], "synced");
    assert_eq!(t["attempts"], 3);
    assert_eq!(v["stats"]["external_attempts"], 3);
    let fails = failures(&v);
    assert_eq!(fails.len(), 2);
    for (i, a) in fails.iter().enumerate() {
        assert_eq!(a["attempt"], i as u64 + 1);
        assert_eq!(a["code"], "rclone_temporary");
        assert_eq!(a["retryable"], true);
    }
    let d1 = fails[0]["delay_ms"].as_u64().unwrap();
    let d2 = fails[1]["delay_ms"].as_u64().unwrap();
    // Equal jitter: the first delay is within [base/2, base], the second within [base, 2·base].
    assert!((100..=200).contains(&d1), "first delay {d1} ms");
    assert!((200..=400).contains(&d2), "second delay {d2} ms");
    assert!(d2 >= d1, "delays grow: {d1} then {d2}");
    assert!(
        took.as_millis() as u64 >= d1 + d2,
        "the delays were really slept"
    );
    // The copy on the fake remote is a whole repository.
    let (code, v) = e.json(
        "backup-verify",
        &["--repo", f.remote.to_str().unwrap(), "--read-data"],
    );
    assert_eq!(code, 0, "{v:#}");
}

#[test]
fn a_configuration_error_is_not_retried() {
    let e = TestEnv::with_dotfiles();
    let f = fake(&e);
    let (code, v) = f.run(
        &e,
        "config-error",
        "backup-checkpoint",
        &["manual", "x"],
        &[],
    );
    assert_eq!(code, 0, "the checkpoint is committed anyway: {v:#}");
    assert_eq!(v["degradation"], "local-only");
    let t = &v["external"][0];
    assert_eq!(t["status"], "failed");
    assert_eq!(t["attempts"], 1);
    assert_eq!(t["error"]["code"], "rclone_failed");
    assert_eq!(t["error"]["retryable"], false);
    assert_eq!(f.calls(), 1, "exactly one rclone call");
    assert_eq!(failures(&v)[0]["delay_ms"], 0);
    // The explicit sync fails with exit 1 and says it is not worth retrying.
    f.reset();
    let (code, v) = f.run(
        &e,
        "config-error",
        "backup-create",
        &["--sync-external"],
        &[],
    );
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(v["errors"][0]["retryable"], false);
    assert_eq!(f.calls(), 1);
}

#[test]
fn retries_flag_and_env_limit_the_attempts() {
    let e = TestEnv::with_dotfiles();
    let f = fake(&e);
    let (code, v) = f.run(
        &e,
        "fail-first-5",
        "backup-checkpoint",
        &["manual", "x", "--retries", "1"],
        &[],
    );
    assert_eq!(code, 0);
    assert_eq!(v["external"][0]["status"], "unreachable");
    assert_eq!(v["external"][0]["attempts"], 1);
    assert_eq!(
        v["external"][0]["error"]["retryable"], true,
        "retryable, but no attempts left"
    );
    f.reset();
    let (code, v) = f.run(
        &e,
        "fail-first-5",
        "backup-create",
        &["--sync-external"],
        &[("BACKUP_RETRIES", "2")],
    );
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(v["external"][0]["attempts"], 2);
    assert_eq!(f.calls(), 2);
    let (code, v) = f.run(
        &e,
        "ok",
        "backup-create",
        &["--sync-external", "--retries", "0"],
        &[],
    );
    assert_eq!(code, 2, "{v:#}");
    assert_eq!(v["errors"][0]["code"], "bad_config");
}

#[test]
fn a_hung_rclone_call_is_killed_at_the_time_limit_and_retried() {
    let e = TestEnv::with_dotfiles();
    let f = fake(&e);
    let cfg = e.tmp.path().join("config.toml");
    std::fs::write(&cfg, "[external]\ntimeout_secs = 1\n").unwrap();
    let started = Instant::now();
    let (code, v) = f.run(
        &e,
        "hang-first",
        "backup-checkpoint",
        &["manual", "x", "--config", cfg.to_str().unwrap()],
        &[],
    );
    assert!(
        started.elapsed().as_secs() < 20,
        "the hung call was not waited out"
    );
    assert_eq!(code, 0, "{v:#}");
    let t = &v["external"][0];
    assert_eq!(t["status"], "synced", "{v:#}");
    assert_eq!(t["attempts"], 2);
    assert_eq!(failures(&v)[0]["code"], "rclone_timeout");
}

#[test]
fn without_rclone_on_path_the_target_is_unreachable_with_a_hint() {
    let e = TestEnv::with_dotfiles();
    let empty = e.tmp.path().join("emptybin");
    std::fs::create_dir(&empty).unwrap();
    let path = empty.to_string_lossy().into_owned();
    let (code, v, _) = e.run(
        "backup-checkpoint",
        &["manual", "x"],
        &[
            ("PATH", &path),
            ("BACKUP_EXTERNAL", "cloud=rclone:gdrive:backups"),
            ("BACKUP_RETRY_BASE_MS", "1"),
        ],
    );
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["degradation"], "local-only");
    let t = &v["external"][0];
    assert_eq!(t["error"]["code"], "rclone_missing");
    assert_eq!(
        t["attempts"], 1,
        "installing rclone is not something a retry does"
    );
    assert!(t["error"]["hint"]
        .as_str()
        .unwrap()
        .contains("install rclone"));
}
