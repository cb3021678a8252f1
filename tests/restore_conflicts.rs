//! Restore conflicts (issue 22 point 3): `--overwrite skip` leaves each
//! existing path that differs and reports it (exit 3), `--overwrite rename`
//! keeps it beside under `NAME.dotfiles-backup-<ID>~`; both for restore and
//! rollback, with the safety snapshot and `--undo` as always.

mod common;

use common::*;
use serde_json::Value;

const CKPT: &str = "backup-checkpoint";

fn ok(e: &TestEnv, bin: &str, args: &[&str]) -> Value {
    let (rc, v) = e.json(bin, args);
    assert_eq!(rc, 0, "{bin} {args:?}: {v:#}");
    v
}

fn read(e: &TestEnv, rel: &str) -> String {
    std::fs::read_to_string(e.home.join(rel)).unwrap()
}

/// A checkpoint of the dotfiles, then two changed files and a removed one.
/// Returns the checkpoint's short id.
fn checkpoint_then_edit(e: &TestEnv) -> String {
    let v = ok(e, CKPT, &["manual", "good"]);
    e.write(".zshrc", b"my edit\n", 0o644);
    e.write(".config/nvim/init.lua", b"-- mine\n", 0o644);
    std::fs::remove_file(e.home.join(".gitconfig")).unwrap();
    v["snapshot"]["short_id"].as_str().unwrap().to_string()
}

fn errors_by_code<'a>(v: &'a Value, code: &str) -> Vec<&'a str> {
    v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["code"] == code)
        .map(|e| e["path"].as_str().unwrap())
        .collect()
}

#[test]
fn restore_skip_leaves_each_conflict_restores_the_rest_and_reports_each() {
    let e = TestEnv::with_dotfiles();
    checkpoint_then_edit(&e);
    let (rc, v) = e.json("backup-restore", &["good", "--overwrite", "skip"]);
    assert_eq!(rc, 3, "{v:#}");
    assert_eq!(v["status"], "partial");
    let mut skipped = errors_by_code(&v, "conflict_skipped");
    skipped.sort();
    assert_eq!(skipped.len(), 2, "{v:#}");
    assert!(skipped[0].ends_with(".config/nvim/init.lua"), "{skipped:?}");
    assert!(skipped[1].ends_with(".zshrc"), "{skipped:?}");
    assert_eq!(read(&e, ".zshrc"), "my edit\n", "left as it is");
    assert_eq!(read(&e, ".config/nvim/init.lua"), "-- mine\n");
    assert_eq!(
        read(&e, ".gitconfig"),
        "[user]\n\tname = Test\n",
        "the rest restored"
    );
    assert_eq!(v["stats"]["created"], 1);
    assert_eq!(v["stats"]["skipped"], 2);

    // Human output names each skipped path.
    std::fs::remove_file(e.home.join(".gitconfig")).unwrap();
    let out = e.output("backup-restore", &["good", "--overwrite", "skip"], &[]);
    assert_eq!(out.status.code(), Some(3));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for p in ["~/.zshrc", "~/.config/nvim/init.lua"] {
        assert!(
            text.lines()
                .any(|l| l.contains(p) && l.contains("--overwrite skip")),
            "{p} in:\n{text}"
        );
    }
}

#[test]
fn restore_skip_with_only_conflicts_changes_nothing_and_is_still_partial() {
    let e = TestEnv::with_dotfiles();
    ok(&e, CKPT, &["manual", "good"]);
    e.write(".zshrc", b"my edit\n", 0o644);
    let before = dir_state(&e.home);
    let (rc, v) = e.json("backup-restore", &["good", "--overwrite", "skip"]);
    assert_eq!(rc, 3, "{v:#}");
    assert_eq!(errors_by_code(&v, "conflict_skipped").len(), 1, "{v:#}");
    assert_eq!(dir_state(&e.home), before);
}

#[test]
fn restore_rename_keeps_each_conflict_beside_and_undo_brings_the_layout_back() {
    let e = TestEnv::with_dotfiles();
    let id = checkpoint_then_edit(&e);
    let before = dir_state(&e.home);

    // A dry run shows where each would be kept, and changes nothing.
    let v = ok(
        &e,
        "backup-restore",
        &["good", "--overwrite", "rename", "--dry-run"],
    );
    let kept: Vec<&str> = v["plan"]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["kept_as"].as_str())
        .collect();
    assert_eq!(kept.len(), 2, "{v:#}");
    assert_eq!(dir_state(&e.home), before);

    let v = ok(&e, "backup-restore", &["good", "--overwrite", "rename"]);
    assert_eq!(v["stats"]["kept_aside"], 2, "{v:#}");
    assert_eq!(read(&e, ".zshrc"), "export EDITOR=nvim\n");
    assert_eq!(read(&e, ".config/nvim/init.lua"), "vim.o.number = true\n");
    assert_eq!(read(&e, ".gitconfig"), "[user]\n\tname = Test\n");
    let zsh_kept = format!(".zshrc.dotfiles-backup-{id}~");
    let init_kept = format!(".config/nvim/init.lua.dotfiles-backup-{id}~");
    assert_eq!(read(&e, &zsh_kept), "my edit\n");
    assert_eq!(read(&e, &init_kept), "-- mine\n");
    let shown: Vec<&str> = v["plan"]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["kept_as"].as_str())
        .collect();
    assert!(
        shown.contains(&format!("~/{zsh_kept}").as_str()),
        "{shown:?}"
    );

    // Undo: the original files back under their names, the kept copies gone
    // (the kept ~/.zshrc one lies outside every tracked root).
    ok(&e, "backup-rollback", &["--undo"]);
    assert_eq!(dir_state(&e.home), before);
}

#[test]
fn restore_rename_never_replaces_an_existing_kept_name() {
    let e = TestEnv::with_dotfiles();
    let id = checkpoint_then_edit(&e);
    let taken = format!(".zshrc.dotfiles-backup-{id}~");
    e.write(&taken, b"an older kept copy\n", 0o600);
    let inner = format!(".config/nvim/init.lua.dotfiles-backup-{id}~");
    e.write(&inner, b"another\n", 0o600);
    let before = dir_state(&e.home);
    ok(&e, "backup-restore", &["good", "--overwrite", "rename"]);
    assert_eq!(read(&e, &taken), "an older kept copy\n");
    assert_eq!(read(&e, &inner), "another\n");
    assert_eq!(
        read(&e, &format!(".zshrc.dotfiles-backup-{id}.2~")),
        "my edit\n"
    );
    assert_eq!(
        read(
            &e,
            &format!(".config/nvim/init.lua.dotfiles-backup-{id}.2~")
        ),
        "-- mine\n"
    );
    ok(&e, "backup-rollback", &["--undo"]);
    assert_eq!(dir_state(&e.home), before);
}

#[test]
fn restore_rename_keeps_a_changed_symlink_as_a_symlink() {
    let e = TestEnv::with_dotfiles();
    std::os::unix::fs::symlink("nvim/init.lua", e.home.join(".config/link")).unwrap();
    let v = ok(&e, CKPT, &["manual", "good"]);
    let id = v["snapshot"]["short_id"].as_str().unwrap();
    std::fs::remove_file(e.home.join(".config/link")).unwrap();
    std::os::unix::fs::symlink("elsewhere", e.home.join(".config/link")).unwrap();
    ok(&e, "backup-restore", &["good", "--overwrite", "rename"]);
    assert_eq!(
        std::fs::read_link(e.home.join(".config/link")).unwrap(),
        std::path::Path::new("nvim/init.lua")
    );
    assert_eq!(
        std::fs::read_link(e.home.join(format!(".config/link.dotfiles-backup-{id}~"))).unwrap(),
        std::path::Path::new("elsewhere")
    );
}

#[test]
fn rollback_skip_and_rename() {
    let e = TestEnv::with_dotfiles();
    let id = checkpoint_then_edit(&e);
    e.write(".config/new.toml", b"x = 1\n", 0o644);

    // skip: changed files left and reported, the rest rolled back (the new file removed).
    let (rc, v) = e.json("backup-rollback", &["good", "--overwrite", "skip"]);
    assert_eq!(rc, 3, "{v:#}");
    assert_eq!(errors_by_code(&v, "conflict_skipped").len(), 2, "{v:#}");
    assert_eq!(read(&e, ".zshrc"), "my edit\n");
    assert_eq!(read(&e, ".gitconfig"), "[user]\n\tname = Test\n");
    assert!(!e.home.join(".config/new.toml").exists());
    ok(&e, "backup-rollback", &["--undo"]);
    assert!(e.home.join(".config/new.toml").exists());
    let before = dir_state(&e.home);

    // rename: changed files kept beside, then rolled back.
    let v = ok(&e, "backup-rollback", &["good", "--overwrite", "rename"]);
    assert_eq!(v["stats"]["kept_aside"], 2, "{v:#}");
    assert_eq!(read(&e, ".zshrc"), "export EDITOR=nvim\n");
    assert_eq!(
        read(&e, &format!(".zshrc.dotfiles-backup-{id}~")),
        "my edit\n"
    );
    assert_eq!(
        read(&e, &format!(".config/nvim/init.lua.dotfiles-backup-{id}~")),
        "-- mine\n"
    );
    ok(&e, "backup-rollback", &["--undo"]);
    assert_eq!(dir_state(&e.home), before);
}

#[test]
fn rollback_overwrite_values_that_mean_nothing_are_refused() {
    let e = TestEnv::with_dotfiles();
    checkpoint_then_edit(&e);
    let before = dir_state(&e.home);
    let (rc, v) = e.json(
        "backup-rollback",
        &["good", "--phase-only", "--overwrite", "rename"],
    );
    assert_eq!(rc, 2, "{v:#}");
    let (rc, v) = e.json("backup-rollback", &["good", "--overwrite", "always"]);
    assert_eq!(rc, 2, "{v:#}");
    assert_eq!(v["errors"][0]["code"], "overwrite_needs_value");
    assert_eq!(dir_state(&e.home), before);
}

#[test]
fn restore_rename_shortens_a_name_too_long_for_the_suffix() {
    let e = TestEnv::with_dotfiles();
    let long = format!(".config/{}", "a".repeat(250));
    e.write(&long, b"v1\n", 0o644);
    ok(&e, CKPT, &["manual", "good"]);
    e.write(&long, b"v2\n", 0o644);
    let before = dir_state(&e.home);
    let v = ok(&e, "backup-restore", &["good", "--overwrite", "rename"]);
    assert_eq!(v["stats"]["kept_aside"], 1, "{v:#}");
    assert_eq!(read(&e, &long), "v1\n");
    let kept: Vec<_> = std::fs::read_dir(e.home.join(".config"))
        .unwrap()
        .flatten()
        .map(|d| d.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".dotfiles-backup-"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept[0].len() <= 255 && kept[0].starts_with("aaaa"));
    assert_eq!(read(&e, &format!(".config/{}", kept[0])), "v2\n");
    ok(&e, "backup-rollback", &["--undo"]);
    assert_eq!(dir_state(&e.home), before);
}
