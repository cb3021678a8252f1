//! Hostile input: crafted repositories, trees, records and planted links
//! (issue 9, "hostile input").
//!
//! Every case starts from a copy of one small, real repository (and its home),
//! then plants something an attacker with write access to the repository, or
//! to the restore target, could plant: `..` components, absolute paths, NUL
//! and newline in names, very long names and deep trees, duplicate entries,
//! a file and a dir at the same path, symlink-then-file tricks, symlinks and
//! hardlinks planted in the target, absurd sizes, modes and times, truncated
//! and malformed JSON and binary objects, future format versions. Trees and
//! records are named by their SHA-256, so each crafted tree and record is
//! planted twice: once under its true hash (it gets past the name check and
//! reaches the parser and the planner) and once under a wrong name (it must
//! be caught by the checksum).
//!
//! For every case, `backup-restore --target`, `backup-rollback`,
//! `backup-verify --read-data` and `backup-list --files` run; each must end
//! with a valid envelope and either a clear error (exit 5 or 6; a few cases
//! allow other documented codes) or a safe result, never a panic (70) or a
//! signal. The surrounding directory (everything except the repository and
//! the command's own target) is hashed before and after each command: nothing
//! outside the target may change. The case count is asserted (at least 150).

mod common;

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use common::TestEnv;
use dotfiles_backup::hash::Hash;
use serde_json::{json, Value};

/// Content of the one blob every crafted file entry points at.
const PAYLOAD: &[u8] = b"payload\n";

/// A case's working directory: a copy of the template plus `outside/`.
struct Ctx {
    env: TestEnv,
    base: PathBuf,
    outside: PathBuf,
    target: PathBuf,
}

impl Ctx {
    fn repo(&self) -> &Path {
        &self.env.repo
    }
    fn home(&self) -> &Path {
        &self.env.home
    }
}

/// What a case must end in.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Expect {
    /// Restore and rollback must refuse (exit 5 or 6).
    Refused,
    /// A clear error or a safe result.
    Either,
    /// Rollback must refuse; restore into an empty `--target` may succeed
    /// (the crafted root lands beneath the target).
    RollbackRefused,
    /// Not a repository at all: the usage error (exit 2) every command gives.
    NotARepository,
}

type Plant = Box<dyn Fn(&Ctx)>;

struct Case {
    name: String,
    label: &'static str,
    expect: Expect,
    plant: Plant,
}

/// An edit of a snapshot record or tree (JSON).
type JsonEdit = fn(&mut Value);
/// An edit of an index or pack file (bytes).
type ByteEdit = fn(&mut Vec<u8>);

fn case(name: impl Into<String>, expect: Expect, plant: impl Fn(&Ctx) + 'static) -> Case {
    Case {
        name: name.into(),
        label: "evil",
        expect,
        plant: Box::new(plant),
    }
}

/// Home and repository with one real checkpoint (`real`) of `~/.zshrc` and `~/.config`.
fn template() -> TestEnv {
    let t = TestEnv::new();
    t.write(".zshrc", b"export A=1\n", 0o644);
    t.write(".config/payload", PAYLOAD, 0o644);
    t.write(".config/app/f0", b"zero\n", 0o644);
    t.write(".config/app/f1", b"one\n", 0o600);
    let (code, v) = t.json(
        "backup-checkpoint",
        &[
            "manual",
            "real",
            "--path",
            "~/.zshrc",
            "--path",
            "~/.config",
        ],
    );
    assert_eq!(code, 0, "{v:#}");
    t
}

fn copy_dir(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success(), "cp -a {} {}", from.display(), to.display());
}

fn fresh(template: &TestEnv) -> Ctx {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().to_path_buf();
    copy_dir(&template.home, &base.join("home"));
    copy_dir(&template.repo, &base.join("repo"));
    let outside = base.join("outside");
    std::fs::create_dir_all(outside.join("dir")).unwrap();
    std::fs::write(outside.join("secret"), b"outside secret\n").unwrap();
    std::fs::write(outside.join("hard"), b"outside hardlinked\n").unwrap();
    std::fs::write(outside.join("dir/keep"), b"outside keep\n").unwrap();
    let env = TestEnv {
        home: base.join("home"),
        repo: base.join("repo"),
        tmp,
        run_as: None,
    };
    Ctx {
        target: base.join("target"),
        outside,
        base,
        env,
    }
}

fn payload_sha() -> String {
    Hash::of(PAYLOAD).to_hex()
}

fn b64(bytes: &[u8]) -> Value {
    json!({ "b64": base64::engine::general_purpose::STANDARD.encode(bytes) })
}

/// A name as JSON: a plain string when UTF-8, else the `{"b64"}` form.
fn name(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(s) => Value::String(s.to_string()),
        Err(_) => b64(bytes),
    }
}

fn entry(path: Value, kind: &str) -> Value {
    let mut e = json!({"path": path, "type": kind, "mode": 0o644, "uid": 0, "gid": 0,
        "mtime_ns": 1_600_000_000_000_000_000i64, "size": 0});
    match kind {
        "file" => {
            e["size"] = json!(PAYLOAD.len());
            e["sha256"] = json!(payload_sha());
        }
        "dir" => e["mode"] = json!(0o755),
        "symlink" => {
            e["target"] = json!("payload");
            e["size"] = json!(7);
        }
        _ => {}
    }
    e
}

fn root_dir() -> Value {
    entry(json!(""), "dir")
}

fn tree(roots: Vec<(Value, Vec<Value>)>) -> Value {
    json!({"version": 1, "roots": roots.into_iter().map(|(root, entries)| json!({
        "root": root, "present": true, "entries": entries})).collect::<Vec<_>>()})
}

/// One root `~/.config` holding the root dir entry plus `entries`.
fn config_tree(entries: Vec<Value>) -> Value {
    let mut all = vec![root_dir()];
    all.extend(entries);
    tree(vec![(json!("~/.config"), all)])
}

/// Write `bytes` under `dir` named `<name><suffix>`.
fn put(dir: &Path, name: &str, suffix: &str, bytes: &[u8]) {
    std::fs::write(dir.join(format!("{name}{suffix}")), bytes).unwrap();
}

fn record_for(tree_id: &str, roots: Value, label: &str) -> Value {
    json!({
        "version": 1, "kind": "checkpoint", "label": label, "tags": [], "parent": null,
        "host": "h", "user": "u", "created_at": "2099-01-01T00:00:00.000000000Z",
        "tree": tree_id, "roots": roots,
        "summary": {"files": 1, "dirs": 1, "symlinks": 0, "bytes": 1, "new_bytes": 0, "new_blobs": 0, "omitted": 0}
    })
}

/// Plant a tree (as raw bytes) and a record for it labelled `evil`. With
/// `true_name` the tree is named by its hash; else by the hash of other bytes.
fn plant_tree_bytes(ctx: &Ctx, bytes: &[u8], roots: Value, true_name: bool) {
    let id = if true_name {
        Hash::of(bytes)
    } else {
        let mut other = bytes.to_vec();
        other.push(b' ');
        Hash::of(&other)
    };
    put(&ctx.repo().join("trees"), &id.to_hex(), ".json", bytes);
    plant_record(ctx, &record_for(&id.to_hex(), roots, "evil"), true);
}

fn plant_tree(ctx: &Ctx, t: &Value, true_name: bool) {
    let roots: Vec<Value> = t["roots"]
        .as_array()
        .map(|rs| rs.iter().map(|r| r["root"].clone()).collect())
        .unwrap_or_default();
    plant_tree_bytes(
        ctx,
        &serde_json::to_vec(t).unwrap(),
        Value::Array(roots),
        true_name,
    );
}

fn plant_record_bytes(ctx: &Ctx, bytes: &[u8], true_name: bool) {
    let id = if true_name {
        Hash::of(bytes)
    } else {
        Hash::of(b"some other record")
    };
    put(&ctx.repo().join("snapshots"), &id.to_hex(), ".json", bytes);
}

fn plant_record(ctx: &Ctx, r: &Value, true_name: bool) {
    plant_record_bytes(ctx, &serde_json::to_vec_pretty(r).unwrap(), true_name);
}

/// Both variants (true hash name, wrong name) of a tree case. The wrong name
/// is always a checksum error.
fn tree_cases(
    out: &mut Vec<Case>,
    name: &str,
    expect: Expect,
    make: impl Fn(&Ctx) -> Value + 'static,
) {
    let make = std::rc::Rc::new(make);
    let m = make.clone();
    out.push(case(format!("{name} (hash-named)"), expect, move |c| {
        plant_tree(c, &m(c), true)
    }));
    out.push(case(
        format!("{name} (wrong name)"),
        Expect::Refused,
        move |c| plant_tree(c, &make(c), false),
    ));
}

/// Entry paths that must never be joined beneath a root, and some that are
/// odd but legal (they must land inside the target).
fn path_cases(out: &mut Vec<Case>) {
    let refused: Vec<(&str, Vec<u8>)> = vec![
        ("dotdot", b"..".to_vec()),
        ("dotdot-x", b"../x".to_vec()),
        ("dotdot-2", b"../../x".to_vec()),
        ("inner-dotdot", b"a/../../x".to_vec()),
        ("trailing-dotdot", b"a/..".to_vec()),
        ("absolute", b"/x".to_vec()),
        ("slash", b"/".to_vec()),
        ("dot", b".".to_vec()),
        ("dot-x", b"./x".to_vec()),
        ("inner-dot", b"a/./b".to_vec()),
        ("double-slash", b"a//b".to_vec()),
        ("trailing-slash", b"a/".to_vec()),
        ("nul", b"x\0y".to_vec()),
        ("only-nul", b"\0".to_vec()),
        ("non-utf8-dotdot", b"\xff/../../x".to_vec()),
    ];
    for (n, p) in refused {
        for kind in ["file", "dir", "symlink"] {
            let p2 = p.clone();
            tree_cases(
                out,
                &format!("path {n} as {kind}"),
                Expect::Refused,
                move |_| config_tree(vec![entry(name(&p2), kind)]),
            );
            let p3 = p.clone();
            // The same name forced into the b64 form.
            tree_cases(
                out,
                &format!("path {n} as {kind} (b64)"),
                Expect::Refused,
                move |_| config_tree(vec![entry(b64(&p3), kind)]),
            );
        }
    }
    // Absolute paths into the case's own outside dir.
    for kind in ["file", "dir", "symlink"] {
        tree_cases(
            out,
            &format!("absolute path into outside/ as {kind}"),
            Expect::Refused,
            move |c| {
                let p = c.outside.join("planted");
                config_tree(vec![entry(name(p.as_os_str().as_bytes()), kind)])
            },
        );
    }
    let odd_but_legal: Vec<(&str, Vec<u8>)> = vec![
        ("newline", b"x\ny".to_vec()),
        ("only-newline", b"\n".to_vec()),
        ("dash-rf", b"-rf".to_vec()),
        ("space", b" ".to_vec()),
        ("three-dots", b"...".to_vec()),
        ("backslash-dotdot", b"..\\x".to_vec()),
        ("non-utf8", b"\xff\xfe".to_vec()),
        ("rtl-override", "\u{202e}gpj.exe".as_bytes().to_vec()),
        ("max-name", vec![b'n'; 255]),
        ("name-too-long", vec![b'n'; 256]),
        ("name-5000", vec![b'n'; 5000]),
    ];
    for (n, p) in odd_but_legal {
        for kind in ["file", "dir", "symlink"] {
            let p2 = p.clone();
            tree_cases(
                out,
                &format!("path {n} as {kind}"),
                Expect::Either,
                move |_| config_tree(vec![entry(name(&p2), kind)]),
            );
        }
    }
}

fn root_cases(out: &mut Vec<Case>) {
    let refused: Vec<(&str, Vec<u8>)> = vec![
        ("tilde-dotdot", b"~/../escape".to_vec()),
        ("tilde-dotdot-deep", b"~/a/../../escape".to_vec()),
        ("tilde-dot", b"~/./x".to_vec()),
        ("tilde-double-slash", b"~//x".to_vec()),
        ("slash", b"/".to_vec()),
        ("relative", b"relative".to_vec()),
        ("empty", b"".to_vec()),
        ("tilde-user", b"~root/x".to_vec()),
        ("nul", b"~/x\0y".to_vec()),
        ("non-utf8-dotdot", b"~/\xff/../..".to_vec()),
    ];
    for (n, r) in refused {
        tree_cases(out, &format!("root {n}"), Expect::Refused, move |_| {
            tree(vec![(
                name(&r),
                vec![root_dir(), entry(json!("x"), "file")],
            )])
        });
    }
    tree_cases(
        out,
        "root /etc/dfb-hostile (absolute, not configured)",
        Expect::RollbackRefused,
        |_| {
            tree(vec![(
                json!("/etc/dfb-hostile"),
                vec![root_dir(), entry(json!("x"), "file")],
            )])
        },
    );
    tree_cases(
        out,
        "root is outside/ (absolute, not configured)",
        Expect::RollbackRefused,
        |c| {
            tree(vec![(
                name(c.outside.as_os_str().as_bytes()),
                vec![root_dir(), entry(json!("x"), "file")],
            )])
        },
    );
    tree_cases(out, "root ~ itself, present", Expect::Either, |_| {
        tree(vec![(
            json!("~"),
            vec![root_dir(), entry(json!("planted"), "file")],
        )])
    });
    tree_cases(out, "two roots, same path", Expect::Either, |_| {
        tree(vec![
            (json!("~/.config"), vec![root_dir()]),
            (
                json!("~/.config"),
                vec![root_dir(), entry(json!("x"), "file")],
            ),
        ])
    });
    tree_cases(out, "overlapping roots", Expect::Either, |_| {
        tree(vec![
            (
                json!("~/.config"),
                vec![root_dir(), entry(json!("app"), "dir")],
            ),
            (json!("~/.config/app"), vec![entry(json!(""), "file")]),
        ])
    });
    tree_cases(out, "absent root with entries", Expect::Either, |_| {
        json!({"version": 1, "roots": [{"root": "~/.config", "present": false,
            "entries": [root_dir(), entry(json!("x"), "file")]}]})
    });
    tree_cases(out, "file root with children", Expect::Refused, |_| {
        tree(vec![(
            json!("~/.config"),
            vec![entry(json!(""), "file"), entry(json!("x"), "file")],
        )])
    });
    tree_cases(
        out,
        "no roots",
        Expect::Either,
        |_| json!({"version": 1, "roots": []}),
    );
}

fn structure_cases(out: &mut Vec<Case>) {
    let f = |p: &str| entry(json!(p), "file");
    let d = |p: &str| entry(json!(p), "dir");
    let l = |p: &str, t: &str| {
        let mut e = entry(json!(p), "symlink");
        e["target"] = json!(t);
        e["size"] = json!(t.len());
        e
    };
    tree_cases(out, "duplicate file entry", Expect::Refused, move |_| {
        config_tree(vec![f("x"), f("x")])
    });
    tree_cases(
        out,
        "file and dir at one path",
        Expect::Refused,
        move |_| config_tree(vec![f("x"), d("x")]),
    );
    tree_cases(
        out,
        "dir and symlink at one path",
        Expect::Refused,
        move |_| config_tree(vec![d("x"), l("x", "y")]),
    );
    tree_cases(out, "file with a child", Expect::Either, move |_| {
        config_tree(vec![f("x"), f("x/y")])
    });
    tree_cases(out, "child before its parent", Expect::Either, move |_| {
        config_tree(vec![f("a/b"), d("a")])
    });
    tree_cases(
        out,
        "child without parent entry",
        Expect::Either,
        move |_| config_tree(vec![f("nodir/x")]),
    );
    // Symlink-then-file: a symlink to outside, then a file "through" it.
    for (n, t) in [
        ("relative", "../../outside"),
        ("relative-dir", "../../outside/dir"),
        ("dot", "."),
        ("dotdot", ".."),
        ("tmp", "/tmp"),
    ] {
        tree_cases(
            out,
            &format!("symlink ({n}) then file through it"),
            Expect::Either,
            move |_| config_tree(vec![l("l", t), f("l/x")]),
        );
        tree_cases(
            out,
            &format!("symlink ({n}) then dir through it"),
            Expect::Either,
            move |_| config_tree(vec![l("l", t), d("l/sub"), f("l/sub/x")]),
        );
    }
    tree_cases(
        out,
        "symlink to outside/ (absolute) then file through it",
        Expect::Either,
        |c| {
            let mut e = entry(json!("l"), "symlink");
            e["target"] = name(c.outside.as_os_str().as_bytes());
            config_tree(vec![e, entry(json!("l/secret"), "file")])
        },
    );
    tree_cases(
        out,
        "symlink named like an existing dir, then its file",
        Expect::Either,
        move |_| config_tree(vec![l("app", "../../outside"), f("app/f0")]),
    );
    tree_cases(
        out,
        "symlink with empty target",
        Expect::Refused,
        move |_| config_tree(vec![l("l", "")]),
    );
    tree_cases(out, "symlink target with NUL", Expect::Refused, move |_| {
        config_tree(vec![l("l", "a\0b")])
    });
    tree_cases(out, "symlink to /etc/shadow", Expect::Either, move |_| {
        config_tree(vec![l("l", "/etc/shadow")])
    });
    tree_cases(out, "symlink without target", Expect::Either, |_| {
        let mut e = entry(json!("l"), "symlink");
        e.as_object_mut().unwrap().remove("target");
        config_tree(vec![e])
    });
    tree_cases(out, "file without sha256", Expect::Either, |_| {
        let mut e = entry(json!("x"), "file");
        e.as_object_mut().unwrap().remove("sha256");
        config_tree(vec![e])
    });
    tree_cases(out, "file naming a missing blob", Expect::Either, |_| {
        let mut e = entry(json!("x"), "file");
        e["sha256"] = json!(Hash::of(b"not stored").to_hex());
        config_tree(vec![e])
    });
    tree_cases(out, "file with bad sha256 text", Expect::Refused, |_| {
        let mut e = entry(json!("x"), "file");
        e["sha256"] = json!("../../../etc/passwd");
        config_tree(vec![e])
    });
    for (n, size) in [("max", u64::MAX), ("mismatch", 1000), ("zero", 0)] {
        tree_cases(out, &format!("file size {n}"), Expect::Either, move |_| {
            let mut e = entry(json!("x"), "file");
            e["size"] = json!(size);
            config_tree(vec![e])
        });
    }
    tree_cases(out, "negative size", Expect::Refused, |_| {
        let mut e = entry(json!("x"), "file");
        e["size"] = json!(-1);
        config_tree(vec![e])
    });
    tree_cases(out, "dir with sha256", Expect::Either, |_| {
        let mut e = entry(json!("x"), "dir");
        e["sha256"] = json!(payload_sha());
        config_tree(vec![e])
    });
    for (n, mode) in [
        ("7777", 0o7777u64),
        ("setuid", 0o4755),
        ("zero", 0),
        ("huge", 0xFFFF_FFFF),
        ("type-bits", 0o100644),
    ] {
        for kind in ["file", "dir"] {
            tree_cases(
                out,
                &format!("{kind} mode {n}"),
                Expect::Either,
                move |_| {
                    let mut e = entry(json!("x"), kind);
                    e["mode"] = json!(mode);
                    config_tree(vec![e, f("x2")])
                },
            );
        }
    }
    tree_cases(out, "mode too large for u32", Expect::Refused, |_| {
        let mut e = entry(json!("x"), "file");
        e["mode"] = json!(1u64 << 40);
        config_tree(vec![e])
    });
    for (n, uid) in [("root", 0u64), ("max", u32::MAX as u64), ("nobody", 65534)] {
        tree_cases(out, &format!("uid {n}"), Expect::Either, move |_| {
            let mut e = entry(json!("x"), "file");
            e["uid"] = json!(uid);
            e["gid"] = json!(uid);
            config_tree(vec![e])
        });
    }
    for (n, t) in [("min", i64::MIN), ("max", i64::MAX), ("negative", -1)] {
        tree_cases(out, &format!("mtime {n}"), Expect::Either, move |_| {
            let mut e = entry(json!("x"), "file");
            e["mtime_ns"] = json!(t);
            config_tree(vec![e, d("y")])
        });
    }
    tree_cases(out, "omitted with odd reason", Expect::Either, move |_| {
        let mut e = entry(json!("app/f0"), "file");
        e["omitted"] = json!("../../etc");
        e.as_object_mut().unwrap().remove("sha256");
        config_tree(vec![d("app"), e])
    });
    tree_cases(
        out,
        "sealed with traversal key name",
        Expect::Either,
        |_| {
            let mut e = entry(json!("x"), "file");
            e.as_object_mut().unwrap().remove("sha256");
            e["sealed"] = json!({"id": payload_sha(), "key": "../../../outside/secret"});
            config_tree(vec![e])
        },
    );
    tree_cases(out, "sealed and sha256 both", Expect::Either, |_| {
        let mut e = entry(json!("x"), "file");
        e["sealed"] = json!({"id": payload_sha(), "key": "0123456789abcdef"});
        config_tree(vec![e])
    });
    tree_cases(out, "unknown entry type", Expect::Refused, |_| {
        config_tree(vec![entry(json!("x"), "fifo")])
    });
    tree_cases(out, "unknown entry field", Expect::Refused, |_| {
        let mut e = entry(json!("x"), "file");
        e["exec"] = json!("rm -rf ~");
        config_tree(vec![e])
    });
    tree_cases(out, "entry missing mode", Expect::Refused, |_| {
        let mut e = entry(json!("x"), "file");
        e.as_object_mut().unwrap().remove("mode");
        config_tree(vec![e])
    });
    tree_cases(out, "entry path is a number", Expect::Refused, |_| {
        config_tree(vec![entry(json!(5), "file")])
    });
    tree_cases(out, "bad base64 name", Expect::Refused, |_| {
        config_tree(vec![entry(json!({"b64": "!!!"}), "file")])
    });
    tree_cases(out, "deep tree (300 levels)", Expect::Either, move |_| {
        let mut es = Vec::new();
        let mut p = String::new();
        for _ in 0..300 {
            if !p.is_empty() {
                p.push('/');
            }
            p.push('d');
            es.push(d(&p));
        }
        es.push(f(&format!("{p}/leaf")));
        config_tree(es)
    });
    tree_cases(
        out,
        "path longer than PATH_MAX",
        Expect::Either,
        move |_| {
            let comp = "c".repeat(200);
            let mut es = Vec::new();
            let mut p = String::new();
            for _ in 0..30 {
                if !p.is_empty() {
                    p.push('/');
                }
                p.push_str(&comp);
                es.push(d(&p));
            }
            es.push(f(&format!("{p}/leaf")));
            config_tree(es)
        },
    );
    tree_cases(out, "3000 entries", Expect::Either, move |_| {
        config_tree((0..3000).map(|i| f(&format!("f{i:05}"))).collect())
    });
    tree_cases(out, "tree version 2 (future)", Expect::Refused, move |_| {
        let mut t = config_tree(vec![f("x")]);
        t["version"] = json!(2);
        t
    });
    tree_cases(out, "tree version u32::MAX", Expect::Refused, move |_| {
        let mut t = config_tree(vec![f("x")]);
        t["version"] = json!(u32::MAX);
        t
    });
    tree_cases(
        out,
        "tree unknown top-level field",
        Expect::Refused,
        move |_| {
            let mut t = config_tree(vec![f("x")]);
            t["hooks"] = json!(["sh -c evil"]);
            t
        },
    );
    tree_cases(out, "tree is an array", Expect::Refused, |_| json!([1, 2]));
}

/// Malformed bytes where a tree or a record is expected (hash-named, so they reach the parser).
fn malformed_cases(out: &mut Vec<Case>) {
    let good = serde_json::to_vec(&config_tree(vec![entry(json!("x"), "file")])).unwrap();
    let samples: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("truncated-half", good[..good.len() / 2].to_vec()),
        ("truncated-1", good[..good.len() - 1].to_vec()),
        ("binary", (0..=255u8).collect()),
        ("nul-bytes", vec![0; 64]),
        ("not-json", b"hello world".to_vec()),
        ("json-null", b"null".to_vec()),
        ("json-string", b"\"tree\"".to_vec()),
        ("trailing-garbage", [good.clone(), b"}}".to_vec()].concat()),
        (
            "deep-nesting",
            [vec![b'['; 10000], vec![b']'; 10000]].concat(),
        ),
        (
            "invalid-utf8",
            [
                b"{\"version\":1,\"roots\":[],\"x\":\"".to_vec(),
                vec![0xff, 0xfe],
                b"\"}".to_vec(),
            ]
            .concat(),
        ),
        (
            "duplicate-keys",
            b"{\"version\":1,\"version\":1,\"roots\":[]}".to_vec(),
        ),
    ];
    for (n, bytes) in samples {
        let b = bytes.clone();
        out.push(case(format!("tree bytes {n}"), Expect::Refused, move |c| {
            plant_tree_bytes(c, &b, json!(["~/.config"]), true)
        }));
        let b = bytes.clone();
        out.push(case(
            format!("record bytes {n}"),
            Expect::Refused,
            move |c| plant_record_bytes(c, &b, true),
        ));
    }
}

fn record_cases(out: &mut Vec<Case>) {
    let real_tree = |c: &Ctx| -> String {
        let name = std::fs::read_dir(c.repo().join("trees"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .file_name();
        name.to_str().unwrap().trim_end_matches(".json").to_string()
    };
    let variants: Vec<(&str, Expect, JsonEdit)> = vec![
        ("version 2 (future)", Expect::Refused, |r| {
            r["version"] = json!(2)
        }),
        ("missing tree", Expect::Refused, |r| {
            r["tree"] = json!(Hash::of(b"no such tree").to_hex())
        }),
        ("tree id not hex", Expect::Refused, |r| {
            r["tree"] = json!("../../outside/secret")
        }),
        ("unknown kind", Expect::Refused, |r| {
            r["kind"] = json!("evil")
        }),
        ("unknown field", Expect::Refused, |r| {
            r["hook"] = json!("sh")
        }),
        ("missing label", Expect::Refused, |r| {
            r.as_object_mut().unwrap().remove("label");
        }),
        ("garbage created_at", Expect::Either, |r| {
            r["created_at"] = json!("yesterday; rm -rf /")
        }),
        ("label with slash and newline", Expect::Either, |r| {
            r["label"] = json!("../evil\nlabel")
        }),
        ("roots disagree with tree", Expect::Either, |r| {
            r["roots"] = json!(["/etc", "~/../x"])
        }),
        ("parent names itself", Expect::Either, |r| {
            r["parent"] = r["tree"].clone()
        }),
        ("absurd summary", Expect::Either, |r| {
            r["summary"]["bytes"] = json!(u64::MAX)
        }),
        ("kind safety", Expect::Either, |r| {
            r["kind"] = json!("safety")
        }),
    ];
    for (n, expect, f) in variants {
        for true_name in [true, false] {
            out.push(case(
                format!(
                    "record {n} ({})",
                    if true_name {
                        "hash-named"
                    } else {
                        "wrong name"
                    }
                ),
                if true_name { expect } else { Expect::Refused },
                move |c| {
                    let mut r = record_for(&real_tree(c), json!(["~/.zshrc", "~/.config"]), "evil");
                    f(&mut r);
                    plant_record(c, &r, true_name);
                },
            ));
        }
    }
}

/// Index, pack and config.json damage and crafting (binary formats).
fn binary_cases(out: &mut Vec<Case>) {
    fn only(dir: &Path) -> PathBuf {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
            .unwrap()
    }
    /// Replace the only index file by `bytes`, named by their hash.
    fn replace_index(c: &Ctx, bytes: &[u8]) {
        let old = only(&c.repo().join("index"));
        std::fs::remove_file(old).unwrap();
        put(
            &c.repo().join("index"),
            &Hash::of(bytes).to_hex(),
            "",
            bytes,
        );
    }
    fn real_index(c: &Ctx) -> Vec<u8> {
        std::fs::read(only(&c.repo().join("index"))).unwrap()
    }
    fn real_pack(c: &Ctx) -> (PathBuf, Vec<u8>) {
        let p = only(&c.repo().join("packs"));
        let b = std::fs::read(&p).unwrap();
        (p, b)
    }
    // Index layout: magic 8 | P u32 | P×32 | B u32 | B×{id32 flags1 pack4 off8 len8}
    fn first_record(bytes: &[u8]) -> usize {
        let p = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
        12 + p * 32 + 4
    }
    let index_edits: Vec<(&str, ByteEdit)> = vec![
        ("truncated", |b| b.truncate(b.len() - 5)),
        ("bad magic", |b| b[0] = b'X'),
        ("pack count u32::MAX", |b| {
            b[8..12].copy_from_slice(&u32::MAX.to_le_bytes())
        }),
        ("blob count u32::MAX", |b| {
            let at = first_record(b) - 4;
            b[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes())
        }),
        ("record names pack #99", |b| {
            let at = first_record(b) + 33;
            b[at..at + 4].copy_from_slice(&99u32.to_le_bytes())
        }),
        ("offset u64::MAX", |b| {
            let at = first_record(b) + 37;
            b[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes())
        }),
        ("length u64::MAX", |b| {
            let at = first_record(b) + 45;
            b[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes())
        }),
        ("offset and length overflow together", |b| {
            let at = first_record(b) + 37;
            b[at..at + 8].copy_from_slice(&(u64::MAX - 2).to_le_bytes());
            b[at + 8..at + 16].copy_from_slice(&16u64.to_le_bytes());
        }),
        ("length 1 TiB", |b| {
            let at = first_record(b) + 45;
            b[at..at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes())
        }),
        ("flags say sealed", |b| {
            let at = first_record(b) + 32;
            b[at] = 1
        }),
        ("flags unknown", |b| {
            let at = first_record(b) + 32;
            b[at] = 0xff
        }),
        ("empty", |b| b.clear()),
        ("extra trailing bytes", |b| b.extend_from_slice(b"junk")),
    ];
    for (n, edit) in index_edits {
        out.push(case(
            format!("index {n} (hash-named)"),
            Expect::Either,
            move |c| {
                let mut b = real_index(c);
                edit(&mut b);
                replace_index(c, &b);
            },
        ));
    }
    out.push(case("index renamed wrong", Expect::Either, |c| {
        let b = real_index(c);
        std::fs::remove_file(only(&c.repo().join("index"))).unwrap();
        put(&c.repo().join("index"), &Hash::of(b"x").to_hex(), "", &b);
    }));
    out.push(case("index is a directory", Expect::Either, |c| {
        let old = only(&c.repo().join("index"));
        std::fs::remove_file(&old).unwrap();
        std::fs::create_dir(&old).unwrap();
    }));
    out.push(case(
        "index is a symlink to an outside file",
        Expect::Either,
        |c| {
            let old = only(&c.repo().join("index"));
            std::fs::remove_file(&old).unwrap();
            std::os::unix::fs::symlink(c.outside.join("secret"), &old).unwrap();
        },
    ));
    let pack_edits: Vec<(&str, ByteEdit)> = vec![
        ("trailer count u32::MAX", |b| {
            let n = b.len();
            b[n - 12..n - 8].copy_from_slice(&u32::MAX.to_le_bytes())
        }),
        ("truncated to magic", |b| b.truncate(8)),
        ("empty", |b| b.clear()),
        ("blob bytes replaced", |b| {
            let pos = b.windows(PAYLOAD.len()).position(|w| w == PAYLOAD).unwrap();
            b[pos] = b'P';
        }),
    ];
    for (n, edit) in pack_edits {
        // Renamed to its new hash and re-indexed, so only content checks can catch it.
        out.push(case(
            format!("pack {n} (renamed to its hash)"),
            Expect::Either,
            move |c| {
                let (old, mut b) = real_pack(c);
                let old_id: Hash = old.file_name().unwrap().to_str().unwrap().parse().unwrap();
                edit(&mut b);
                std::fs::remove_file(&old).unwrap();
                let new_id = Hash::of(&b);
                put(&c.repo().join("packs"), &new_id.to_hex(), "", &b);
                let mut idx = real_index(c);
                let pos = idx.windows(32).position(|w| w == old_id.0).unwrap();
                idx[pos..pos + 32].copy_from_slice(&new_id.0);
                replace_index(c, &idx);
            },
        ));
    }
    out.push(case(
        "pack is a symlink to /dev/null",
        Expect::Either,
        |c| {
            let (old, _) = real_pack(c);
            std::fs::remove_file(&old).unwrap();
            std::os::unix::fs::symlink("/dev/null", &old).unwrap();
        },
    ));
    let config_edits: Vec<(&str, Expect, Value)> = vec![
        (
            "version 2 (future)",
            Expect::Refused,
            json!({"format": "dotfiles-backup-repository", "version": 2, "id": "a", "created_at": "x"}),
        ),
        (
            "version huge",
            Expect::Refused,
            json!({"format": "dotfiles-backup-repository", "version": 4_000_000_000u64, "id": "a", "created_at": "x"}),
        ),
        (
            "wrong format name",
            Expect::Refused,
            json!({"format": "restic", "version": 1, "id": "a", "created_at": "x"}),
        ),
        (
            "no version",
            Expect::Refused,
            json!({"format": "dotfiles-backup-repository", "id": "a", "created_at": "x"}),
        ),
        (
            "id with path traversal",
            Expect::Refused,
            json!({"format": "dotfiles-backup-repository", "version": 1, "id": "../../../outside/planted", "created_at": "x"}),
        ),
        (
            "id with slash",
            Expect::Refused,
            json!({"format": "dotfiles-backup-repository", "version": 1, "id": "a/b", "created_at": "x"}),
        ),
        ("array", Expect::Refused, json!([1])),
    ];
    for (n, expect, v) in config_edits {
        out.push(case(format!("config.json {n}"), expect, move |c| {
            std::fs::write(
                c.repo().join("config.json"),
                serde_json::to_vec(&v).unwrap(),
            )
            .unwrap();
        }));
    }
    for (n, bytes) in [
        ("truncated", &b"{\"format\": \"dotfiles-backup-repo"[..]),
        ("empty", &b""[..]),
        ("binary", &b"\x00\xff\xfe"[..]),
    ] {
        out.push(case(
            format!("config.json {n}"),
            Expect::Refused,
            move |c| {
                std::fs::write(c.repo().join("config.json"), bytes).unwrap();
            },
        ));
    }
    out.push(case("config.json missing", Expect::NotARepository, |c| {
        std::fs::remove_file(c.repo().join("config.json")).unwrap();
    }));
    out.push(case("config.json is a directory", Expect::Refused, |c| {
        std::fs::remove_file(c.repo().join("config.json")).unwrap();
        std::fs::create_dir(c.repo().join("config.json")).unwrap();
    }));
    out.push(case(
        "trees/<id>.json is a directory",
        Expect::Either,
        |c| {
            let t = only(&c.repo().join("trees"));
            std::fs::remove_file(&t).unwrap();
            std::fs::create_dir(&t).unwrap();
        },
    ));
    out.push(case(
        "snapshots/<id>.json is a directory",
        Expect::Either,
        |c| {
            put(
                &c.repo().join("snapshots"),
                &Hash::of(b"d").to_hex(),
                ".json",
                b"",
            );
            let p = c
                .repo()
                .join("snapshots")
                .join(format!("{}.json", Hash::of(b"d").to_hex()));
            std::fs::remove_file(&p).unwrap();
            std::fs::create_dir(&p).unwrap();
        },
    ));
}

/// Symlinks and hardlinks planted in the restore target or the home; the
/// snapshot itself is the real one.
fn planted_cases(out: &mut Vec<Case>) {
    type Pl = fn(&Ctx, &Path);
    let plants: Vec<(&str, Pl)> = vec![
        ("root dir is a symlink to outside", |c, t| {
            let _ = std::fs::remove_dir_all(t.join(".config"));
            std::os::unix::fs::symlink(c.outside.join("dir"), t.join(".config")).unwrap();
        }),
        ("subdir is a symlink to outside", |c, t| {
            let _ = std::fs::remove_dir_all(t.join(".config/app"));
            std::fs::create_dir_all(t.join(".config")).unwrap();
            std::os::unix::fs::symlink(c.outside.join("dir"), t.join(".config/app")).unwrap();
        }),
        ("file is a symlink to an outside file", |c, t| {
            let _ = std::fs::remove_file(t.join(".zshrc"));
            std::os::unix::fs::symlink(c.outside.join("secret"), t.join(".zshrc")).unwrap();
        }),
        ("file is a hardlink to an outside file", |c, t| {
            std::fs::create_dir_all(t.join(".config")).unwrap();
            let _ = std::fs::remove_file(t.join(".config/payload"));
            std::fs::hard_link(c.outside.join("hard"), t.join(".config/payload")).unwrap();
        }),
        ("file is a dangling symlink to outside", |c, t| {
            let _ = std::fs::remove_file(t.join(".zshrc"));
            std::os::unix::fs::symlink(c.outside.join("created-by-restore"), t.join(".zshrc"))
                .unwrap();
        }),
        ("relative symlink dir escaping", |_, t| {
            let _ = std::fs::remove_dir_all(t.join(".config/app"));
            std::fs::create_dir_all(t.join(".config")).unwrap();
            std::os::unix::fs::symlink("../../outside/dir", t.join(".config/app")).unwrap();
        }),
    ];
    for (n, plant) in plants {
        for in_home in [false, true] {
            let mut c = case(
                format!(
                    "planted in {}: {n}",
                    if in_home { "home" } else { "target" }
                ),
                Expect::Either,
                move |c| {
                    let t = if in_home {
                        c.home().to_path_buf()
                    } else {
                        std::fs::create_dir_all(&c.target).unwrap();
                        c.target.clone()
                    };
                    plant(c, &t);
                },
            );
            c.label = "real";
            out.push(c);
        }
    }
}

type Snap = std::collections::BTreeMap<Vec<u8>, (u32, Vec<u8>)>;

/// Everything under the case directory except the repository and `except`:
/// relative path → (mode, content hash or link target). Walks with `openat`
/// and `O_NOFOLLOW` so that paths longer than PATH_MAX (which some cases
/// create) and planted links are read, never followed.
fn surroundings(ctx: &Ctx, except: &str) -> Snap {
    use rustix::fs::{openat, statat, AtFlags, FileType, Mode, OFlags, CWD};
    fn go(fd: &std::os::fd::OwnedFd, rel: &[u8], depth: usize, out: &mut Snap) {
        let mut dir = rustix::fs::Dir::read_from(fd).expect("listing");
        let mut names = Vec::new();
        while let Some(e) = dir.read() {
            let e = e.expect("listing");
            let n = e.file_name().to_bytes().to_vec();
            if n != b"." && n != b".." {
                names.push(n);
            }
        }
        names.sort();
        for n in names {
            let mut child = rel.to_vec();
            if !child.is_empty() {
                child.push(b'/');
            }
            child.extend_from_slice(&n);
            let name = std::ffi::CString::new(n).unwrap();
            let st = statat(fd, &name, AtFlags::SYMLINK_NOFOLLOW).expect("stat");
            #[allow(clippy::useless_conversion)] // st_mode is u16 on macOS, u32 on Linux
            let mode = u32::from(st.st_mode) & 0o7777;
            match FileType::from_raw_mode(st.st_mode) {
                FileType::Directory => {
                    out.insert(child.clone(), (mode, Vec::new()));
                    if depth < 4000 {
                        let sub = openat(
                            fd,
                            &name,
                            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
                            Mode::empty(),
                        )
                        .expect("open dir");
                        go(&sub, &child, depth + 1, out);
                    }
                }
                FileType::Symlink => {
                    let t = rustix::fs::readlinkat(fd, &name, Vec::new()).expect("readlink");
                    out.insert(child, (mode, t.into_bytes()));
                }
                FileType::RegularFile => {
                    let f = openat(fd, &name, OFlags::RDONLY | OFlags::NOFOLLOW, Mode::empty())
                        .expect("open file");
                    let mut bytes = Vec::new();
                    std::io::Read::read_to_end(&mut std::fs::File::from(f), &mut bytes)
                        .expect("read");
                    out.insert(child, (mode, Hash::of(&bytes).0.to_vec()));
                }
                _ => {
                    out.insert(child, (mode, b"special".to_vec()));
                }
            }
        }
    }
    let fd = openat(
        CWD,
        &ctx.base,
        OFlags::RDONLY | OFlags::DIRECTORY,
        Mode::empty(),
    )
    .unwrap();
    let mut all = Snap::new();
    go(&fd, b"", 0, &mut all);
    all.into_iter()
        .filter(|(k, _)| {
            let top = k.split(|b| *b == b'/').next().unwrap_or_default();
            top != b"repo" && top != except.as_bytes()
        })
        .collect()
}

/// Run every command against a case; return the failures.
fn check(case: &Case, template: &TestEnv) -> Vec<String> {
    let ctx = fresh(template);
    (case.plant)(&ctx);
    let mut failures = Vec::new();
    let target = ctx.target.to_str().unwrap().to_string();
    let restore_args = vec![case.label, "--target", &target, "--overwrite", "always"];
    let runs: Vec<(&str, Vec<&str>, &str)> = vec![
        ("backup-restore", restore_args, "target"),
        ("backup-rollback", vec![case.label], "home"),
        ("backup-verify", vec!["--read-data"], ""),
        ("backup-list", vec![case.label, "--files"], ""),
    ];
    for (bin, args, except) in runs {
        let before = surroundings(&ctx, except);
        let out = ctx.env.output(
            bin,
            &[&["--json"][..], &args[..]].concat(),
            &[("BACKUP_KEY_DIR", ctx.base.join("keys").to_str().unwrap())],
        );
        let Some(code) = out.status.code() else {
            failures.push(format!("{}: {bin} killed by {:?}", case.name, out.status));
            continue;
        };
        let v: Value = match serde_json::from_slice(&out.stdout) {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!(
                    "{}: {bin} stdout is not one envelope ({e}): {}",
                    case.name,
                    String::from_utf8_lossy(&out.stdout)
                ));
                continue;
            }
        };
        let errs = common::schema_errors(&v);
        if !errs.is_empty() {
            failures.push(format!("{}: {bin} envelope invalid: {errs:?}", case.name));
        }
        if v["exit_code"] != code {
            failures.push(format!("{}: {bin} exit_code mismatch", case.name));
        }
        let allowed: &[i32] = match (bin, case.expect) {
            (_, Expect::NotARepository) => &[2],
            ("backup-restore" | "backup-rollback", Expect::Refused) => &[5, 6],
            ("backup-rollback", Expect::RollbackRefused) => &[5, 6],
            ("backup-restore" | "backup-rollback", _) => &[0, 1, 3, 5, 6],
            ("backup-verify", _) => &[0, 6],
            _ => &[0, 1, 5, 6],
        };
        if !allowed.contains(&code) {
            failures.push(format!(
                "{}: {bin} exit {code}, allowed {allowed:?}: {}",
                case.name,
                serde_json::to_string(&v["errors"]).unwrap()
            ));
        }
        if code != 0 && v["errors"].as_array().is_none_or(|a| a.is_empty()) {
            failures.push(format!("{}: {bin} exit {code} without an error", case.name));
        }
        let after = surroundings(&ctx, except);
        if after != before {
            let changed: Vec<String> = before
                .keys()
                .chain(after.keys())
                .filter(|k| before.get(*k) != after.get(*k))
                .take(5)
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect();
            failures.push(format!(
                "{}: {bin} changed things outside its target: {changed:?}",
                case.name
            ));
        }
    }
    // Nothing may ever be written through a planted or crafted link into outside/.
    for p in [
        "planted",
        "created-by-restore",
        "x",
        "l",
        "sub",
        "dir/x",
        "dir/f0",
    ] {
        if ctx.outside.join(p).exists() {
            failures.push(format!("{}: outside/{p} was created", case.name));
        }
    }
    failures
}

fn run_cases(group: &str, cases: Vec<Case>) -> usize {
    let template = template();
    let mut failures = Vec::new();
    for c in &cases {
        failures.extend(check(c, &template));
    }
    assert!(
        failures.is_empty(),
        "{group}: {} failure(s) in {} case(s):\n  {}",
        failures.len(),
        cases.len(),
        failures.join("\n  ")
    );
    eprintln!("hostile {group}: {} cases, 0 failures", cases.len());
    cases.len()
}

/// Binary damage is to the real snapshot's objects: restore and roll back that one.
fn binary_cases_real(out: &mut Vec<Case>) {
    let mut v = Vec::new();
    binary_cases(&mut v);
    for mut c in v {
        c.label = "real";
        out.push(c);
    }
}

/// A named group of cases: the function pushes its cases.
type CaseGroup = (&'static str, fn(&mut Vec<Case>));

fn all_groups() -> Vec<CaseGroup> {
    vec![
        ("paths", path_cases),
        ("roots", root_cases),
        ("structure", structure_cases),
        ("malformed", malformed_cases),
        ("records", record_cases),
        ("binary", binary_cases_real),
        ("planted", planted_cases),
    ]
}

fn group(name: &str) -> Vec<Case> {
    let mut v = Vec::new();
    for (n, f) in all_groups() {
        if n == name {
            f(&mut v);
        }
    }
    v
}

#[test]
fn at_least_150_hostile_cases() {
    let mut total = 0;
    for (_, f) in all_groups() {
        let mut v = Vec::new();
        f(&mut v);
        total += v.len();
    }
    assert!(total >= 150, "only {total} hostile cases");
    eprintln!("hostile: {total} cases in total");
}

#[test]
fn hostile_entry_paths() {
    run_cases("paths", group("paths"));
}

#[test]
fn hostile_roots() {
    run_cases("roots", group("roots"));
}

#[test]
fn hostile_tree_structure() {
    run_cases("structure", group("structure"));
}

#[test]
fn malformed_trees_and_records() {
    run_cases("malformed", group("malformed"));
}

#[test]
fn hostile_records() {
    run_cases("records", group("records"));
}

#[test]
fn hostile_index_pack_and_config() {
    run_cases("binary", group("binary"));
}

#[test]
fn links_planted_in_target_and_home() {
    run_cases("planted", group("planted"));
}
