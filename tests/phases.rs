//! Bootstrap runs and what a phase name means when a bootstrap runs again
//! (issue 18): runs, phase resolution, `backup-list --phases`, first-run
//! pins, undoing one phase, and reports that agree.

mod common;

use common::*;
use serde_json::Value;

const CKPT: &str = "backup-checkpoint";

fn ok(e: &TestEnv, bin: &str, args: &[&str]) -> Value {
    let (rc, v) = e.json(bin, args);
    assert_eq!(rc, 0, "{bin} {args:?}: {v:#}");
    v
}

fn phase(e: &TestEnv, name: &str) -> Value {
    ok(e, CKPT, &["auto", name])
}

fn read(e: &TestEnv, rel: &str) -> String {
    std::fs::read_to_string(e.home.join(rel)).unwrap()
}

/// The issue's scenario: a bootstrap breaks ~/.zshrc, then runs again
/// changing nothing. The two `pre-dotfiles` checkpoints (first, again).
fn broken_then_rerun(e: &TestEnv) -> (Value, Value) {
    e.write(".zshrc", b"good\n", 0o644);
    let first = phase(e, "pre-dotfiles");
    e.write(".zshrc", b"BROKEN\n", 0o644);
    phase(e, "bootstrap-complete");
    let again = phase(e, "pre-dotfiles");
    phase(e, "bootstrap-complete");
    (first, again)
}

#[test]
fn rollback_of_a_phase_after_a_rerun_restores_the_state_before_it_changed_anything() {
    let e = TestEnv::with_dotfiles();
    let (first, again) = broken_then_rerun(&e);
    assert_ne!(
        again["run"], first["run"],
        "a repeated phase begins a new run"
    );

    let v = ok(&e, "backup-rollback", &["pre-dotfiles"]);
    assert_eq!(read(&e, ".zshrc"), "good\n", "{v:#}");
    assert_eq!(v["source"]["id"], first["snapshot"]["id"]);
    let r = &v["resolved"];
    assert_eq!(r["run"], first["run"], "{r:#}");
    let passed = r["passed_over"].as_array().unwrap();
    assert_eq!(passed.len(), 1, "{r:#}");
    assert_eq!(passed[0]["run"], again["run"]);
}

#[test]
fn the_plan_says_which_run_and_why_newer_runs_were_passed_over() {
    let e = TestEnv::with_dotfiles();
    let (first, again) = broken_then_rerun(&e);
    let out = e.output("backup-rollback", &["pre-dotfiles", "--dry-run"], &[]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let run = |v: &Value| v["run"].as_str().unwrap().to_string();
    assert!(text.contains(&format!("of run {}", run(&first))), "{text}");
    assert!(
        text.contains(&format!("passed over run {}", run(&again))),
        "{text}"
    );
    assert!(text.contains("nothing tracked changed"), "{text}");
}

#[test]
fn explicit_forms_pick_other_runs_and_labels_keep_their_meaning() {
    let e = TestEnv::with_dotfiles();
    let mut taken = Vec::new();
    for i in 0..3 {
        e.write(".zshrc", format!("v{i}\n").as_bytes(), 0o644);
        taken.push(phase(&e, "pre-dotfiles"));
        e.write(".zshrc", format!("v{i} after\n").as_bytes(), 0o644);
        phase(&e, "post-setup");
    }
    let manual = ok(&e, CKPT, &["manual", "mine"]);
    let id = |v: &Value| v["snapshot"]["id"].as_str().unwrap().to_string();
    let source = |sel: &str| {
        let v = ok(&e, "backup-rollback", &[sel, "--dry-run"]);
        v["source"]["id"].as_str().unwrap().to_string()
    };
    assert_eq!(
        source("pre-dotfiles"),
        id(&taken[2]),
        "every run changed it"
    );
    assert_eq!(source("pre-dotfiles~0"), id(&taken[2]));
    assert_eq!(source("pre-dotfiles~1"), id(&taken[1]));
    assert_eq!(source("pre-dotfiles~2"), id(&taken[0]));
    assert_eq!(source("pre-dotfiles@first"), id(&taken[0]));
    let run1 = taken[1]["run"].as_str().unwrap();
    assert_eq!(source(&format!("pre-dotfiles@{run1}")), id(&taken[1]));
    assert_eq!(
        source("latest"),
        id(&manual),
        "`latest` is still the newest"
    );
    assert_eq!(source("mine"), id(&manual));
    // backup-list and backup-restore resolve the same way.
    let v = ok(&e, "backup-list", &["pre-dotfiles~1"]);
    assert_eq!(v["snapshot"]["id"], taken[1]["snapshot"]["id"]);

    let (rc, v) = e.json("backup-rollback", &["pre-dotfiles~3", "--dry-run"]);
    assert_eq!(rc, 1, "{v:#}");
    assert_eq!(v["errors"][0]["code"], "snapshot_not_found");
    assert!(v["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("only 3 run(s)"));
    let (rc, v) = e.json("backup-rollback", &["pre-dotfiles@nosuchrun", "--dry-run"]);
    assert_eq!(rc, 1, "{v:#}");
    assert!(v["errors"][0]["hint"]
        .as_str()
        .unwrap()
        .contains("--phases"));
    let (rc, v) = e.json("backup-rollback", &["pre-dotfiles~x", "--dry-run"]);
    assert_eq!(rc, 2, "{v:#}");
}

#[test]
fn a_run_id_from_the_environment_wins_over_the_automatic_rule() {
    let e = TestEnv::with_dotfiles();
    let env = [("BACKUP_RUN_ID", "play-1")];
    let (rc, a, _) = e.run(CKPT, &["auto", "pre-dotfiles"], &env);
    assert_eq!(rc, 0, "{a:#}");
    assert_eq!(a["run"], "play-1");
    // A repeated phase stays in the play's run, and the record is reused.
    let (_, b, _) = e.run(CKPT, &["auto", "pre-dotfiles"], &env);
    assert_eq!(b["run"], "play-1");
    assert_eq!(b["changed"], false, "{b:#}");
    assert_eq!(b["snapshot"]["id"], a["snapshot"]["id"]);
    // --run beats the environment; pre-ansible without one starts a new run.
    let (_, c, _) = e.run(CKPT, &["auto", "pre-homebrew", "--run", "mine"], &env);
    assert_eq!(c["run"], "mine");
    let d = phase(&e, "pre-ansible");
    assert!(d["run"] != "mine" && d["run"] != "play-1", "{d:#}");
    let f = phase(&e, "pre-homebrew");
    assert_eq!(f["run"], d["run"], "the next phase joins the current run");
    // A run id goes into messages and commands: same alphabet as names.
    let (rc, v, _) = e.run(CKPT, &["auto", "pre-dotfiles", "--run", "a b"], &[]);
    assert_eq!(rc, 2, "{v:#}");
    assert_eq!(v["errors"][0]["code"], "unsafe_name");
    // Manual checkpoints have no run: --run is refused, the role's variable ignored.
    let (rc, v, _) = e.run(CKPT, &["manual", "x", "--run", "r"], &[]);
    assert_eq!(rc, 2, "{v:#}");
    let (rc, v, _) = e.run(CKPT, &["manual", "x"], &env);
    assert_eq!(rc, 0, "{v:#}");
    assert!(v.get("run").is_none());
    // The record carries the run (docs/format.md).
    let rec = e
        .repo
        .join("snapshots")
        .join(format!("{}.json", a["snapshot"]["id"].as_str().unwrap()));
    let rec: Value = serde_json::from_slice(&std::fs::read(rec).unwrap()).unwrap();
    assert_eq!(rec["run"], "play-1");
}

/// Two runs: the first changes ~/.zshrc during dotfiles, the second nothing.
fn two_runs(e: &TestEnv) -> (Value, Value) {
    e.write(".zshrc", b"good\n", 0o644);
    phase(e, "pre-ansible");
    phase(e, "pre-dotfiles");
    e.write(".zshrc", b"BROKEN\n", 0o644);
    e.write(".config/nvim/new.lua", b"-- added\n", 0o644);
    phase(e, "post-setup");
    let complete = phase(e, "bootstrap-complete");
    phase(e, "pre-ansible");
    phase(e, "pre-dotfiles");
    phase(e, "post-setup");
    let again = phase(e, "bootstrap-complete");
    (complete, again)
}

#[test]
fn list_phases_shows_runs_newest_first_with_what_each_phase_changed() {
    let e = TestEnv::with_dotfiles();
    let (complete, _) = two_runs(&e);
    let v = ok(&e, "backup-list", &["--phases"]);
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{v:#}");
    assert_eq!(v["stats"]["runs"], 2);
    assert_eq!(v["stats"]["phases"], 8);
    assert_eq!(runs[1]["first"], true);
    assert_eq!(runs[1]["run"], complete["run"]);
    let row = |r: usize, p: &str| {
        runs[r]["phases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["phase"] == p)
            .unwrap_or_else(|| panic!("{p}: {v:#}"))
            .clone()
    };
    let dot = row(1, "pre-dotfiles");
    assert_eq!(dot["state_changed"], true);
    assert_eq!(
        (dot["added"].as_u64(), dot["changed"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(dot["bytes"], 7 + 9, "BROKEN\\n and the new file");
    assert_eq!(row(1, "pre-ansible")["state_changed"], false);
    assert_eq!(row(0, "pre-dotfiles")["state_changed"], false);
    assert!(
        row(0, "bootstrap-complete")["state_changed"].is_null(),
        "open"
    );
    assert!(row(1, "pre-ansible")["pinned"]
        .as_str()
        .unwrap()
        .contains("first bootstrap run"));
    assert!(row(0, "pre-ansible")["pinned"].is_null());

    // The completion report of each run says the same.
    for (r, p) in complete["completion"]["phases"]
        .as_array()
        .unwrap()
        .iter()
        .zip(0..)
    {
        let _ = p;
        if r["snapshot"].is_null() {
            continue;
        }
        let listed = row(1, r["phase"].as_str().unwrap());
        assert_eq!(r["snapshot"], listed["snapshot"], "{r:#}");
        assert_eq!(r["pinned"], listed["pinned"]);
        if r["phase"] != "bootstrap-complete" {
            assert_eq!(r["state_changed"], listed["state_changed"], "{r:#}");
        }
        assert_eq!(
            r["rollback"],
            format!("backup-rollback {}", listed["snapshot"].as_str().unwrap()),
            "the hint names the snapshot id"
        );
    }
    // Human form.
    let out = e.output("backup-list", &["--phases"], &[]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("first run"), "{text}");
    assert!(text.contains("+1 -0 ~1"), "{text}");
    assert!(text.contains("open (nothing after it yet)"), "{text}");
}

#[test]
fn list_phases_envelope() {
    let e = TestEnv::with_dotfiles();
    let env = |id: &'static str| [("BACKUP_RUN_ID", id)];
    for (id, content) in [("run-1", "one"), ("run-2", "two")] {
        let (rc, _, _) = e.run(CKPT, &["auto", "pre-dotfiles"], &env(id));
        assert_eq!(rc, 0);
        e.write(".zshrc", content.as_bytes(), 0o644);
        let (rc, _, _) = e.run(CKPT, &["auto", "post-setup"], &env(id));
        assert_eq!(rc, 0);
    }
    let v = ok(&e, "backup-list", &["--phases"]);
    insta::assert_json_snapshot!("list_phases", v, {
        ".version" => "[version]",
        ".duration_ms" => "[duration_ms]",
        ".repository" => "[repository]",
        ".runs[].started_at" => "[started_at]",
        ".runs[].phases[].id" => "[id]",
        ".runs[].phases[].snapshot" => "[short_id]",
        ".runs[].phases[].next" => insta::dynamic_redaction(|v, _| if v.as_str().is_some() { "[short_id]".into() } else { v }),
        ".runs[].phases[].created_at" => "[created_at]",
    });
}

#[test]
fn the_first_runs_checkpoints_survive_prune_after_ten_reruns_until_unpinned() {
    let e = TestEnv::with_dotfiles();
    // Default per-phase retention, no automatic pruning in between.
    e.write(
        ".config/dotfiles-backup/config.toml",
        b"[retention]\nauto = false\n",
        0o644,
    );
    let mut first = Vec::new();
    for p in ["pre-ansible", "pre-homebrew", "pre-dotfiles"] {
        first.push(phase(&e, p));
    }
    for i in 0..10 {
        e.write(".zshrc", format!("re-run {i}\n").as_bytes(), 0o644);
        for p in ["pre-ansible", "pre-homebrew", "pre-dotfiles"] {
            phase(&e, p);
        }
    }
    let v = ok(&e, "backup-prune", &[]);
    assert!(
        v["stats"]["snapshots_removed"].as_u64().unwrap() > 0,
        "{v:#}"
    );
    let list = ok(&e, "backup-list", &[]);
    let ids: Vec<&str> = list["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    for f in &first {
        assert!(
            ids.contains(&f["snapshot"]["id"].as_str().unwrap()),
            "{f:#}"
        );
        let d = v["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == f["snapshot"]["id"])
            .unwrap();
        assert!(
            d["reasons"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r == "pinned"),
            "{d:#}"
        );
    }
    // Listed as pinned, with the reason.
    let phases = ok(&e, "backup-list", &["--phases"]);
    let oldest = phases["runs"].as_array().unwrap().last().unwrap();
    assert_eq!(oldest["first"], true);
    for p in oldest["phases"].as_array().unwrap() {
        assert!(
            p["pinned"]
                .as_str()
                .unwrap()
                .contains("the machine as it came"),
            "{p:#}"
        );
    }
    // The machine as it came can still be brought back.
    let v = ok(&e, "backup-rollback", &["pre-ansible@first", "--dry-run"]);
    assert_eq!(v["source"]["id"], first[0]["snapshot"]["id"]);
    // Until unpinned.
    let short = first[1]["snapshot"]["short_id"].as_str().unwrap();
    ok(&e, "backup-prune", &["--unpin", short]);
    let list = ok(&e, "backup-list", &[]);
    assert!(
        !list["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == first[1]["snapshot"]["id"]),
        "unpinned, the old pre-homebrew goes by policy"
    );
}

/// Run 1's dotfiles phase writes ~/.zshrc and adds ~/.config/nvim/plug.lua
/// and changes init.lua; afterwards init.lua is edited again by hand.
fn phase_with_a_later_edit(e: &TestEnv) -> (Value, Value) {
    let pre = phase(e, "pre-dotfiles");
    e.write(".zshrc", b"from dotfiles\n", 0o644);
    e.write(".config/nvim/plug.lua", b"-- plugin\n", 0o644);
    e.write(".config/nvim/init.lua", b"dotfiles init\n", 0o644);
    let post = phase(e, "pre-applications");
    // Later, outside the phase: init.lua edited by hand, a new file elsewhere.
    e.write(".config/nvim/init.lua", b"my own edit\n", 0o644);
    e.write(".config/other.toml", b"x = 1\n", 0o644);
    (pre, post)
}

#[test]
fn undo_of_one_phase_reverts_only_its_paths_and_leaves_conflicts_alone() {
    let e = TestEnv::with_dotfiles();
    let (pre, _) = phase_with_a_later_edit(&e);
    let (rc, plan) = e.json(
        "backup-rollback",
        &["pre-dotfiles", "--phase-only", "--dry-run"],
    );
    assert_eq!(rc, 0, "{plan:#}");
    let paths = plan["phase_undo"]["paths"].as_array().unwrap();
    let action = |p: &str| {
        paths
            .iter()
            .find(|x| x["path"] == p)
            .map(|x| x["action"].as_str().unwrap().to_string())
    };
    assert_eq!(action("~/.zshrc").as_deref(), Some("revert"), "{plan:#}");
    assert_eq!(action("~/.config/nvim/plug.lua").as_deref(), Some("revert"));
    assert_eq!(
        action("~/.config/nvim/init.lua").as_deref(),
        Some("conflict")
    );
    assert_eq!(action("~/.config/other.toml"), None, "not the phase's");
    assert_eq!(plan["phase_undo"]["conflicts"], 1);
    assert!(plan["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w["code"] == "phase_conflicts"));
    // The human plan shows the conflict.
    let out = e.output(
        "backup-rollback",
        &["pre-dotfiles", "--phase-only", "--dry-run"],
        &[],
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("conflict") && text.contains("init.lua"),
        "{text}"
    );

    let before = dir_state(&e.home);
    let v = ok(&e, "backup-rollback", &["pre-dotfiles", "--phase-only"]);
    assert_eq!(v["source"]["id"], pre["snapshot"]["id"]);
    assert!(
        v["snapshot"]["kind"] == "safety",
        "a safety snapshot first: {v:#}"
    );
    assert_eq!(read(&e, ".zshrc"), "export EDITOR=nvim\n");
    assert!(!e.home.join(".config/nvim/plug.lua").exists());
    assert_eq!(
        read(&e, ".config/nvim/init.lua"),
        "my own edit\n",
        "conflict left alone"
    );
    assert_eq!(
        read(&e, ".config/other.toml"),
        "x = 1\n",
        "later change kept"
    );

    // --undo brings back exactly what was there.
    ok(&e, "backup-rollback", &["--undo"]);
    assert_eq!(dir_state(&e.home), before);

    // --overwrite reverts the conflict too.
    let v = ok(
        &e,
        "backup-rollback",
        &["pre-dotfiles", "--phase-only", "--overwrite"],
    );
    assert_eq!(v["phase_undo"]["conflicts"], 0, "{v:#}");
    assert_eq!(read(&e, ".config/nvim/init.lua"), "vim.o.number = true\n");
    assert_eq!(
        read(&e, ".config/other.toml"),
        "x = 1\n",
        "still not the phase's"
    );
}

#[test]
fn undo_of_one_phase_refuses_what_it_cannot_know() {
    let e = TestEnv::with_dotfiles();
    phase(&e, "pre-dotfiles");
    e.write(".zshrc", b"changed\n", 0o644);
    // Open: nothing after the phase yet.
    let (rc, v) = e.json("backup-rollback", &["pre-dotfiles", "--phase-only"]);
    assert_eq!(rc, 2, "{v:#}");
    assert_eq!(v["errors"][0]["code"], "phase_open");
    assert!(v["errors"][0]["hint"]
        .as_str()
        .unwrap()
        .contains("backup-rollback "));
    // Not a phase.
    ok(&e, CKPT, &["manual", "mine"]);
    let (rc, v) = e.json("backup-rollback", &["mine", "--phase-only"]);
    assert_eq!(rc, 2, "{v:#}");
    assert_eq!(v["errors"][0]["code"], "not_a_phase");
    // --overwrite belongs to --phase-only.
    let (rc, _) = e.json("backup-rollback", &["pre-dotfiles", "--overwrite"]);
    assert_eq!(rc, 2);
    assert_eq!(
        read(&e, ".zshrc"),
        "changed\n",
        "nothing changed by refusals"
    );
}

#[test]
fn reruns_that_change_nothing_do_not_push_out_the_checkpoint_a_phase_resolves_to() {
    let e = TestEnv::with_dotfiles();
    // Run 1 (pinned), then run 2 breaks ~/.zshrc, then five runs that change nothing,
    // each followed by the default automatic prune (keep_per_phase = 3).
    phase(&e, "pre-dotfiles");
    phase(&e, "post-setup");
    e.write(".zshrc", b"good\n", 0o644);
    let broken_by = phase(&e, "pre-dotfiles");
    e.write(".zshrc", b"BROKEN\n", 0o644);
    phase(&e, "post-setup");
    for _ in 0..5 {
        phase(&e, "pre-dotfiles");
        phase(&e, "post-setup");
    }
    let v = ok(&e, "backup-prune", &["--dry-run"]);
    let d = v["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == broken_by["snapshot"]["id"])
        .unwrap_or_else(|| panic!("run 2's pre-dotfiles was pruned: {v:#}"))
        .clone();
    assert_eq!(d["keep"], true, "{d:#}");
    assert!(
        d["reasons"][0]
            .as_str()
            .unwrap()
            .contains("changed something"),
        "{d:#}"
    );
    ok(&e, "backup-prune", &[]);
    let v = ok(&e, "backup-rollback", &["pre-dotfiles"]);
    assert_eq!(v["source"]["id"], broken_by["snapshot"]["id"], "{v:#}");
    assert_eq!(read(&e, ".zshrc"), "good\n");
}

/// Found by the attack: with fewer roots tracked at the phase's checkpoint
/// than at the next one, everything under the extra root looked "added by
/// the phase" and the undo deleted it.
#[test]
fn undo_of_one_phase_leaves_roots_tracked_on_one_side_only_alone() {
    let e = TestEnv::with_dotfiles();
    ok(&e, CKPT, &["auto", "pre-dotfiles", "--path", "~/.zshrc"]);
    e.write(".zshrc", b"from dotfiles\n", 0o644);
    phase(&e, "post-setup");
    let (rc, v) = e.json("backup-rollback", &["pre-dotfiles", "--phase-only"]);
    assert_eq!(rc, 0, "{v:#}");
    assert_eq!(read(&e, ".zshrc"), "export EDITOR=nvim\n");
    assert_eq!(
        read(&e, ".config/nvim/init.lua"),
        "vim.o.number = true\n",
        "not the phase's: only tracked after it"
    );
    let paths: Vec<&str> = v["phase_undo"]["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["~/.zshrc"], "{v:#}");
    assert!(v["warnings"].as_array().unwrap().iter().any(
        |w| w["code"] == "roots_differ" && w["message"].as_str().unwrap().contains("~/.config")
    ));
}

#[test]
fn a_pin_that_cannot_be_written_is_a_warning_naming_the_command() {
    let e = TestEnv::with_dotfiles();
    ok(&e, CKPT, &["manual", "init"]);
    std::fs::write(e.repo.join("pins"), b"").unwrap();
    let v = phase(&e, "pre-dotfiles");
    assert!(v.get("pinned").is_none(), "{v:#}");
    let w = v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["code"] == "pin_failed")
        .unwrap_or_else(|| panic!("{v:#}"));
    let msg = w["message"].as_str().unwrap();
    assert!(msg.contains("pins"), "names the path: {msg}");
    assert!(
        msg.contains(&format!(
            "backup-prune --pin {}",
            v["snapshot"]["short_id"].as_str().unwrap()
        )),
        "{msg}"
    );
}
