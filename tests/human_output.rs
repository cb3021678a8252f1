//! Snapshot tests of the human output (no `--json`) of the main screens: the
//! checkpoint summary, the snapshot table, the diff, the rollback plan and its
//! result, and errors with their hints. Ids, times, ages, durations and temp
//! paths are redacted; sizes and counts are real (the fixtures are fixed).
//! After an intended change: `INSTA_UPDATE=always cargo test --test human_output`,
//! then review the `.snap` diffs in `tests/snapshots/`.

mod common;

use common::TestEnv;

/// Run without `--json`; stdout, then stderr under a marker when not empty.
fn screen(e: &TestEnv, bin: &str, args: &[&str]) -> String {
    let out = e.output(bin, args, &[]);
    let mut text = String::from_utf8(out.stdout).expect("stdout is UTF-8");
    let err = String::from_utf8_lossy(&out.stderr);
    if !err.is_empty() {
        text.push_str("--- stderr ---\n");
        text.push_str(&err);
    }
    text.push_str(&format!(
        "--- exit {} ---\n",
        out.status.code().unwrap_or(-1)
    ));
    text
}

fn filters(e: &TestEnv) -> Vec<(String, String)> {
    vec![
        (regex_escape(e.tmp.path().to_str().unwrap()), "[TMP]".into()),
        // Short and full snapshot ids.
        (r"\b[0-9a-f]{64}\b".into(), "[ID64]".into()),
        (r"\b[0-9a-f]{8}\b".into(), "[ID]".into()),
        (
            r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z?".into(),
            "[TIME]".into(),
        ),
        (r"in \d+ ms".into(), "in [N] ms".into()),
        // Ages in the table (the run takes a moment, so they vary).
        (r"\b\d{1,2} (s|min|h|d)\b".into(), "[AGE]".into()),
        // The repository's size includes the run log, whose lines carry durations.
        (
            r"[\d.]+ (B|KiB|MiB) on disk".into(),
            "[SIZE] on disk".into(),
        ),
        (r"started \d+ s ago".into(), "started [N] s ago".into()),
    ]
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if "\\.+*?()|[]{}^$".contains(c) {
                vec!['\\', c]
            } else {
                vec![c]
            }
        })
        .collect()
}

macro_rules! assert_screen {
    ($e:expr, $name:expr, $text:expr) => {
        let f = filters(&$e);
        let refs: Vec<(&str, &str)> = f.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        insta::with_settings!({ filters => refs, prepend_module_to_snapshot => false }, {
            insta::assert_snapshot!($name, $text);
        });
    };
}

#[test]
fn main_screens() {
    let e = TestEnv::with_dotfiles();
    let base = ["--path", "~/.config", "--path", "~/.zshrc"];
    let with = |extra: &[&'static str]| -> Vec<&str> {
        let mut v: Vec<&str> = base.to_vec();
        v.extend_from_slice(extra);
        v
    };

    let first = screen(&e, "backup-checkpoint", &with(&["manual", "before"]));
    assert_screen!(e, "human_checkpoint_stored", first);
    let again = screen(&e, "backup-checkpoint", &with(&["manual", "before"]));
    assert_screen!(e, "human_checkpoint_unchanged", again);

    e.write(
        ".config/nvim/init.lua",
        b"vim.o.number = false -- changed\n",
        0o644,
    );
    e.write(".config/nvim/lua/plugins.lua", b"return {}\n", 0o600);
    std::fs::remove_file(e.home.join(".zshrc")).unwrap();
    let second = screen(&e, "backup-checkpoint", &with(&["manual", "after"]));
    assert_screen!(e, "human_checkpoint_second", second);

    assert_screen!(e, "human_list_table", screen(&e, "backup-list", &[]));
    assert_screen!(
        e,
        "human_list_files",
        screen(&e, "backup-list", &["before", "--files"])
    );
    assert_screen!(
        e,
        "human_diff",
        screen(&e, "backup-list", &["--diff", "before", "after"])
    );
    assert_screen!(
        e,
        "human_rollback_dry_run",
        screen(&e, "backup-rollback", &["before", "--dry-run"])
    );
    assert_screen!(
        e,
        "human_rollback_done",
        screen(&e, "backup-rollback", &["before"])
    );
    assert_screen!(
        e,
        "human_diff_live_after_rollback",
        screen(&e, "backup-list", &["--diff", "before"])
    );
}

#[test]
fn errors_show_reason_path_and_hint() {
    let e = TestEnv::with_dotfiles();
    assert_screen!(
        e,
        "human_error_no_repository",
        screen(&e, "backup-list", &["latest", "--files"])
    );
    let out = screen(&e, "backup-checkpoint", &["auto", "pre-nothing"]);
    assert!(out.contains("hint:"), "{out}");
    assert_screen!(e, "human_error_unknown_phase", out);
    let (code, _) = e.json("backup-checkpoint", &["--path", "~/.zshrc", "manual", "x"]);
    assert_eq!(code, 0);
    assert_screen!(
        e,
        "human_error_snapshot_not_found",
        screen(&e, "backup-list", &["--diff", "nope"])
    );
}
