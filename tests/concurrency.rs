//! Concurrency: 2, 4 and 8 writers (checkpoints, rollbacks, prunes) started
//! together on one repository. Each succeeds or exits with lock-busy (4); the
//! repository verifies clean afterwards and no committed snapshot is lost.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn exe(bin: &str) -> &'static str {
    match bin {
        "backup-checkpoint" => env!("CARGO_BIN_EXE_backup-checkpoint"),
        "backup-rollback" => env!("CARGO_BIN_EXE_backup-rollback"),
        "backup-prune" => env!("CARGO_BIN_EXE_backup-prune"),
        "backup-list" => env!("CARGO_BIN_EXE_backup-list"),
        "backup-verify" => env!("CARGO_BIN_EXE_backup-verify"),
        other => panic!("{other}"),
    }
}

fn run(home: &PathBuf, repo: &PathBuf, bin: &str, args: &[String]) -> (i32, Value) {
    let out = Command::new(exe(bin))
        .args(args)
        .arg("--json")
        .env_clear()
        .env("HOME", home)
        .env("BACKUP_REPO", repo)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        serde_json::from_slice(&out.stdout).unwrap(),
    )
}

#[test]
fn concurrent_writers_succeed_or_report_lock_busy_and_lose_nothing() {
    for n in [2usize, 4, 8] {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        let repo = tmp.path().join("repo");
        std::fs::create_dir_all(home.join(".config")).unwrap();
        std::fs::write(home.join(".zshrc"), b"base\n").unwrap();
        let paths = ["--path", "~/.zshrc", "--path", "~/.config"].map(String::from);
        let mut base_args = vec!["manual".to_string(), "base".to_string()];
        base_args.extend(paths.iter().cloned());
        assert_eq!(run(&home, &repo, "backup-checkpoint", &base_args).0, 0);
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (home, repo, paths) = (home.clone(), repo.clone(), paths.clone());
                std::thread::spawn(move || {
                    let (bin, mut args): (&str, Vec<String>) = match i % 3 {
                        0 => ("backup-checkpoint", vec!["manual".into(), format!("c{i}")]),
                        1 => ("backup-rollback", vec!["base".into()]),
                        _ => ("backup-prune", vec![]),
                    };
                    if bin == "backup-checkpoint" {
                        std::fs::write(home.join(".config").join(format!("f{i}")), format!("{i}"))
                            .unwrap();
                        args.extend(paths);
                    }
                    args.extend(["--wait".to_string(), "0.05".to_string()]);
                    let (rc, v) = run(&home, &repo, bin, &args);
                    (bin, rc, v)
                })
            })
            .collect();
        let mut committed = vec!["base".to_string()];
        for h in handles {
            let (bin, rc, v) = h.join().unwrap();
            assert!(rc == 0 || rc == 4, "{n} writers: {bin} exited {rc}: {v}");
            if rc == 4 {
                assert_eq!(v["errors"][0]["code"], "lock_busy");
            } else if bin == "backup-checkpoint" {
                committed.push(v["snapshot"]["label"].as_str().unwrap().to_string());
            }
        }
        let (rc, v) = run(&home, &repo, "backup-verify", &["--read-data".to_string()]);
        assert_eq!(rc, 0, "{n} writers: {v}");
        let (_, list) = run(&home, &repo, "backup-list", &[]);
        let labels: Vec<&str> = list["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["label"].as_str().unwrap())
            .collect();
        for c in &committed {
            assert!(
                labels.contains(&c.as_str()),
                "{n} writers: committed {c} lost: {labels:?}"
            );
        }
    }
}

#[test]
fn a_lock_left_by_a_killed_process_is_taken_over_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let repo = tmp.path().join("repo");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join(".zshrc"), b"x").unwrap();
    let args: Vec<String> = ["manual", "a", "--path", "~/.zshrc"]
        .map(String::from)
        .to_vec();
    assert_eq!(run(&home, &repo, "backup-checkpoint", &args).0, 0);
    // What a writer killed with SIGKILL leaves: its record in the lock file, no flock held.
    std::fs::write(
        repo.join("lock"),
        br#"{"pid":4194000,"host":"h","command":"backup-create","started_at":1}"#,
    )
    .unwrap();
    std::fs::write(home.join(".zshrc"), b"y").unwrap();
    let args: Vec<String> = ["manual", "b", "--path", "~/.zshrc"]
        .map(String::from)
        .to_vec();
    let (rc, v) = run(&home, &repo, "backup-checkpoint", &args);
    assert_eq!(rc, 0, "{v}");
    assert!(
        v["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["code"] == "stale_lock"),
        "{v}"
    );
}
