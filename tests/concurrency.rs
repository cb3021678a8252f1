//! Concurrency: 2, 4 and 8 writers (checkpoints, rollbacks, prunes) started
//! together on one repository. Each succeeds or exits with lock-busy (4); the
//! repository verifies clean afterwards and no committed snapshot is lost.

mod common;
use common::TestEnv;

#[test]
fn concurrent_writers_succeed_or_report_lock_busy_and_lose_nothing() {
    for n in [2usize, 4, 8] {
        let e = TestEnv::new();
        std::fs::create_dir_all(e.home.join(".config")).unwrap();
        std::fs::write(e.home.join(".zshrc"), b"base\n").unwrap();
        let paths = ["--path", "~/.zshrc", "--path", "~/.config"];
        let mut base_args = vec!["manual", "base"];
        base_args.extend(paths);
        assert_eq!(e.json("backup-checkpoint", &base_args).0, 0);
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..n)
                .map(|i| {
                    let e = &e;
                    s.spawn(move || {
                        let label = format!("c{i}");
                        let (bin, mut args): (&str, Vec<&str>) = match i % 3 {
                            0 => ("backup-checkpoint", vec!["manual", &label]),
                            1 => ("backup-rollback", vec!["base"]),
                            _ => ("backup-prune", vec![]),
                        };
                        if bin == "backup-checkpoint" {
                            std::fs::write(
                                e.home.join(".config").join(format!("f{i}")),
                                format!("{i}"),
                            )
                            .unwrap();
                            args.extend(paths);
                        }
                        args.extend(["--wait", "0.05"]);
                        let (rc, v) = e.json(bin, &args);
                        (bin, rc, v)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut committed = vec!["base".to_string()];
        for (bin, rc, v) in results {
            assert!(rc == 0 || rc == 4, "{n} writers: {bin} exited {rc}: {v}");
            if rc == 4 {
                assert_eq!(v["errors"][0]["code"], "lock_busy");
            } else if bin == "backup-checkpoint" {
                committed.push(v["snapshot"]["label"].as_str().unwrap().to_string());
            }
        }
        let (rc, v) = e.json("backup-verify", &["--read-data"]);
        assert_eq!(rc, 0, "{n} writers: {v}");
        let (_, list) = e.json("backup-list", &[]);
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
    let e = TestEnv::new();
    std::fs::write(e.home.join(".zshrc"), b"x").unwrap();
    e.checkpoint("a", &["~/.zshrc"]);
    // What a writer killed with SIGKILL leaves: its record in the lock file, no flock held.
    std::fs::write(
        e.repo.join("lock"),
        br#"{"pid":4194000,"host":"h","command":"backup-create","started_at":1}"#,
    )
    .unwrap();
    std::fs::write(e.home.join(".zshrc"), b"y").unwrap();
    let (rc, v) = e.json("backup-checkpoint", &["manual", "b", "--path", "~/.zshrc"]);
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
