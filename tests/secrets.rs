//! Secret-class files: stored only age-encrypted, named by a keyed hash,
//! restored with the identity (mode 0600), reported per path without it,
//! and never present as plaintext anywhere in the repository (issue 7).

mod common;

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{all_file_bytes, noise, TestEnv};
use serde_json::Value;

/// Secret files (relative to home) with distinct, incompressible content.
fn secret_files() -> Vec<(&'static str, Vec<u8>)> {
    let mut key = b"-----BEGIN OPENSSH PRIVATE KEY-----\n".to_vec();
    key.extend(noise(2000, 11));
    vec![
        (".ssh/id_ed25519", key),
        (".ssh/id_rsa", noise(3000, 12)),
        (".netrc", {
            let mut v = b"machine api.example.com login me password ".to_vec();
            v.extend(noise(40, 13));
            v
        }),
        (".aws/credentials", noise(300, 14)),
        (".config/gh/hosts.yml", noise(200, 15)),
        (".config/tool/api.token", noise(64, 16)),
        (".config/tls/server.pem", noise(1500, 17)),
    ]
}

fn config(env: &TestEnv) {
    env.write(
        ".config/dotfiles-backup/config.toml",
        b"[track]\nconfig = [\"~/.ssh\", \"~/.netrc\", \"~/.aws\", \"~/.config\", \"~/.zshrc\"]\n",
        0o644,
    );
}

/// A home with ordinary dotfiles, secrets, and a config tracking them.
fn home_with_secrets() -> TestEnv {
    let env = TestEnv::with_dotfiles();
    for (rel, bytes) in secret_files() {
        env.write(rel, &bytes, 0o600);
    }
    env.write(".ssh/config", b"Host *\n  IdentitiesOnly yes\n", 0o644);
    env.write(".ssh/id_ed25519.pub", b"ssh-ed25519 AAAA test\n", 0o644);
    config(&env);
    env
}

fn init_secrets(env: &TestEnv) -> String {
    let (code, v) = env.json("backup-create", &["--init-secrets"]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["changed"], true);
    v["secrets"]["recipient"].as_str().unwrap().to_string()
}

fn checkpoint(env: &TestEnv, label: &str) -> Value {
    let (code, v) = env.json("backup-checkpoint", &["manual", "--", label]);
    assert_eq!(code, 0, "{v:#}");
    v
}

/// Every 16-byte window of every secret.
fn windows(secrets: &[(&str, Vec<u8>)]) -> HashSet<[u8; 16]> {
    let mut set = HashSet::new();
    for (_, bytes) in secrets {
        for w in bytes.windows(16) {
            set.insert(<[u8; 16]>::try_from(w).unwrap());
        }
    }
    set
}

/// Files under `dir` containing any of the windows.
fn leaks(dir: &Path, windows: &HashSet<[u8; 16]>) -> Vec<PathBuf> {
    all_file_bytes(dir)
        .into_iter()
        .filter(|(_, bytes)| {
            bytes
                .windows(16)
                .any(|w| windows.contains(&<[u8; 16]>::try_from(w).unwrap()))
        })
        .map(|(p, _)| p)
        .collect()
}

fn listed(env: &TestEnv, selector: &str) -> Vec<Value> {
    let (code, v) = env.json("backup-list", &[selector, "--files"]);
    assert_eq!(code, 0, "{v:#}");
    v["entries"].as_array().unwrap().clone()
}

#[test]
fn secrets_are_stored_encrypted_and_never_as_plaintext() {
    let env = home_with_secrets();
    init_secrets(&env);
    let first = checkpoint(&env, "one");
    assert!(
        first["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["code"] != "secret_skipped"),
        "{first:#}"
    );
    assert_eq!(first["stats"]["secrets_sealed"], 7, "{first:#}");
    // Change one secret, add one, and checkpoint again.
    env.write(".ssh/id_rsa", &noise(3000, 99), 0o600);
    env.write(".config/tool/second.key", &noise(128, 98), 0o600);
    checkpoint(&env, "two");

    let mut all = secret_files();
    all.push(("id_rsa v2", noise(3000, 99)));
    all.push(("second.key", noise(128, 98)));
    let w = windows(&all);
    assert!(!w.is_empty());
    // Sanity: the scanner finds a window where one is planted.
    assert_eq!(leaks(&env.home.join(".ssh"), &w).len(), 2);
    assert_eq!(
        leaks(&env.repo, &w),
        Vec::<PathBuf>::new(),
        "plaintext secret bytes in the repository"
    );

    // Trees carry no plain hash of a secret; blob ids are keyed.
    let plain_hashes: HashSet<String> = all.iter().map(|(_, b)| common::sha256_hex(b)).collect();
    for (path, bytes) in all_file_bytes(&env.repo) {
        let text = String::from_utf8_lossy(&bytes);
        for h in &plain_hashes {
            assert!(
                !text.contains(h.as_str()),
                "{} names a secret's SHA-256",
                path.display()
            );
            let raw = hex_decode(h);
            assert!(
                !bytes.windows(32).any(|w| w == raw.as_slice()),
                "{} holds a secret's SHA-256",
                path.display()
            );
        }
    }
    let entries = listed(&env, "two");
    let secret_paths: Vec<&str> = entries
        .iter()
        .filter(|e| e["encrypted"] == true)
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    for p in [
        "~/.ssh/id_ed25519",
        "~/.ssh/id_rsa",
        "~/.netrc",
        "~/.aws/credentials",
        "~/.config/gh/hosts.yml",
        "~/.config/tool/api.token",
        "~/.config/tool/second.key",
        "~/.config/tls/server.pem",
    ] {
        assert!(
            secret_paths.contains(&p),
            "{p} not encrypted: {secret_paths:?}"
        );
    }
    for e in entries.iter().filter(|e| e["encrypted"] == true) {
        assert!(e["sha256"].is_null(), "{e:#}");
    }
    // Public keys and ssh config are ordinary files.
    for e in &entries {
        if e["path"] == "~/.ssh/config" || e["path"] == "~/.ssh/id_ed25519.pub" {
            assert_eq!(e["encrypted"], false, "{e:#}");
            assert!(e["sha256"].is_string());
        }
    }
    // The identity is never stored, not even encrypted.
    assert!(entries
        .iter()
        .all(|e| !e["path"].as_str().unwrap().ends_with("identity.txt")));

    // verify --read-data covers encrypted blobs through the pack checksums.
    let (code, v) = env.json("backup-verify", &["--read-data"]);
    assert_eq!(code, 0, "{v:#}");
}

fn hex_decode(h: &str) -> Vec<u8> {
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn unchanged_secrets_are_deduplicated() {
    let env = home_with_secrets();
    init_secrets(&env);
    checkpoint(&env, "one");
    let packs_before = common::names_in(&env.repo, "packs");
    let second = checkpoint(&env, "two");
    assert_eq!(second["stats"]["new_blobs"], 0, "{second:#}");
    assert_eq!(common::names_in(&env.repo, "packs"), packs_before);
}

#[test]
fn rollback_brings_secrets_back_with_mode_0600() {
    let env = home_with_secrets();
    // A secret recorded 0644 still comes back owner-only.
    env.write(".config/tool/api.token", &noise(64, 16), 0o644);
    init_secrets(&env);
    checkpoint(&env, "before");
    // A bad phase overwrites one key, deletes another, and loosens a third.
    env.write(".ssh/id_ed25519", b"overwritten by a bad phase\n", 0o644);
    std::fs::remove_file(env.home.join(".netrc")).unwrap();
    std::fs::remove_file(env.home.join(".config/tool/api.token")).unwrap();
    let (code, v) = env.json("backup-rollback", &["before"]);
    assert_eq!(code, 0, "{v:#}");
    assert!(
        v["stats"]["secrets_decrypted"].as_u64().unwrap() >= 3,
        "{v:#}"
    );
    for (rel, bytes) in secret_files() {
        let p = env.home.join(rel);
        assert_eq!(std::fs::read(&p).unwrap(), bytes, "{rel}");
    }
    for rel in [".ssh/id_ed25519", ".netrc", ".config/tool/api.token"] {
        let mode = std::fs::metadata(env.home.join(rel))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{rel} came back {mode:o}");
    }
    // The overwritten content went into the safety snapshot, encrypted too:
    // undo brings the bad phase's version back.
    let (code, v) = env.json("backup-rollback", &["--undo"]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(
        std::fs::read(env.home.join(".ssh/id_ed25519")).unwrap(),
        b"overwritten by a bad phase\n"
    );
    assert!(leaks(
        &env.repo,
        &windows(&[("bad", b"overwritten by a bad phase\n".to_vec())])
    )
    .is_empty());
}

#[test]
fn restore_without_identity_names_each_secret_and_restores_the_rest() {
    let env = home_with_secrets();
    init_secrets(&env);
    checkpoint(&env, "one");
    let identity = env.home.join(".config/dotfiles-backup/identity.txt");
    let moved = env.tmp.path().join("identity-elsewhere.txt");
    std::fs::rename(&identity, &moved).unwrap();

    let target = env.tmp.path().join("restored");
    let (code, v) = env.json(
        "backup-restore",
        &["one", "--target", target.to_str().unwrap()],
    );
    assert_eq!(code, 3, "partial: {v:#}");
    assert_eq!(v["status"], "partial");
    let failed: Vec<String> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["code"] == "secret_not_decrypted")
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(failed.len(), secret_files().len(), "{v:#}");
    for (rel, _) in secret_files() {
        assert!(
            failed.iter().any(|m| m.contains(rel)),
            "{rel} not named: {failed:?}"
        );
    }
    // Everything else came back; no secret file was written at all.
    let restored: Vec<(PathBuf, Vec<u8>)> = all_file_bytes(&target);
    for (rel, _) in secret_files() {
        assert!(
            !restored.iter().any(|(p, _)| p.ends_with(rel)),
            "{rel} written"
        );
    }
    assert!(restored
        .iter()
        .any(|(p, b)| p.ends_with(".zshrc") && b == b"export EDITOR=nvim\n"));
    assert!(restored.iter().any(|(p, _)| p.ends_with(".ssh/config")));
    assert!(leaks(&target, &windows(&secret_files())).is_empty());

    // With the identity back (and given explicitly), the secrets restore too.
    let target2 = env.tmp.path().join("restored2");
    let (code, v, _) = env.run(
        "backup-restore",
        &["one", "--target", target2.to_str().unwrap()],
        &[("BACKUP_AGE_IDENTITY", moved.to_str().unwrap())],
    );
    assert_eq!(code, 0, "{v:#}");
    let restored = all_file_bytes(&target2);
    for (rel, bytes) in secret_files() {
        let hit = restored.iter().find(|(p, _)| p.ends_with(rel));
        let (p, b) = hit.unwrap_or_else(|| panic!("{rel} not restored"));
        assert_eq!(b, &bytes, "{rel}");
        let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{rel}");
    }
}

#[test]
fn wrong_identity_is_reported_not_written() {
    let env = home_with_secrets();
    init_secrets(&env);
    checkpoint(&env, "one");
    let other = env.tmp.path().join("other-identity.txt");
    std::fs::write(
        &other,
        format!("{}\n", {
            use age::secrecy::ExposeSecret;
            age::x25519::Identity::generate()
                .to_string()
                .expose_secret()
                .to_string()
        }),
    )
    .unwrap();
    let target = env.tmp.path().join("restored");
    let (code, v, _) = env.run(
        "backup-restore",
        &["one", "--target", target.to_str().unwrap()],
        &[("BACKUP_AGE_IDENTITY", other.to_str().unwrap())],
    );
    assert_eq!(code, 3, "{v:#}");
    assert!(v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["code"] == "secret_not_decrypted"));
    assert!(leaks(&target, &windows(&secret_files())).is_empty());
}

#[test]
fn without_recipients_secrets_are_skipped_by_name_and_never_stored() {
    let env = home_with_secrets();
    let v = checkpoint(&env, "one");
    let skipped: Vec<&str> = v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["code"] == "secret_skipped")
        .map(|w| w["path"].as_str().unwrap())
        .collect();
    assert_eq!(skipped.len(), secret_files().len(), "{v:#}");
    assert!(skipped.contains(&"~/.ssh/id_ed25519"));
    assert_eq!(v["status"], "success");
    assert!(leaks(&env.repo, &windows(&secret_files())).is_empty());
    // Rollback leaves unstored secrets alone, whatever happened to them.
    env.write(".ssh/id_ed25519", b"changed\n", 0o600);
    let (code, v) = env.json("backup-rollback", &["one"]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(
        std::fs::read(env.home.join(".ssh/id_ed25519")).unwrap(),
        b"changed\n"
    );
}

#[test]
fn a_bad_recipient_in_the_config_fails_every_command_naming_it() {
    let env = home_with_secrets();
    env.write(
        ".config/dotfiles-backup/config.toml",
        b"[track]\nconfig = [\"~/.ssh\"]\n[secrets]\nrecipients = [\"age1notakey\"]\n",
        0o644,
    );
    let (code, v) = env.json("backup-checkpoint", &["manual", "--", "x"]);
    assert_eq!(code, 2, "{v:#}");
    let msg = v["errors"][0]["message"].as_str().unwrap();
    assert!(
        msg.contains("age1notakey") && msg.contains("secrets.recipients"),
        "{msg}"
    );
}

#[test]
fn a_new_machine_unlocks_the_secret_id_key_with_the_identity() {
    let env = home_with_secrets();
    init_secrets(&env);
    checkpoint(&env, "one");
    // The plain key lives outside the repository; lose it (a new machine
    // that got the repository from an external copy).
    let key_dir = env.home.join(".local/state/dotfiles-backup/keys");
    assert!(key_dir.is_dir());
    std::fs::remove_dir_all(&key_dir).unwrap();
    // With the identity, the key is unwrapped from the repository: same ids, no new blobs.
    let v = checkpoint(&env, "two");
    assert_eq!(v["stats"]["new_blobs"], 0, "{v:#}");
    assert!(key_dir.is_dir());
    // Without the identity and without the plain key, secrets are skipped, not re-keyed.
    std::fs::remove_dir_all(&key_dir).unwrap();
    std::fs::remove_file(env.home.join(".config/dotfiles-backup/identity.txt")).unwrap();
    env.write(".ssh/id_rsa", &noise(3000, 77), 0o600);
    let v = checkpoint(&env, "three");
    let skipped: Vec<&Value> = v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["code"] == "secret_skipped")
        .collect();
    assert_eq!(skipped.len(), secret_files().len(), "{v:#}");
    assert!(
        skipped[0]["message"].as_str().unwrap().contains("identity"),
        "{v:#}"
    );
}

#[test]
fn a_passphrase_protected_identity_works_with_the_passphrase_env() {
    let env = home_with_secrets();
    init_secrets(&env);
    checkpoint(&env, "one");
    // Replace the identity with a passphrase-protected copy of itself (like `age -p`).
    let identity = env.home.join(".config/dotfiles-backup/identity.txt");
    let plain = std::fs::read(&identity).unwrap();
    let encryptor = age::Encryptor::with_user_passphrase(age::secrecy::SecretString::from(
        "correct horse".to_string(),
    ));
    let mut out = Vec::new();
    {
        use std::io::Write;
        let armor =
            age::armor::ArmoredWriter::wrap_output(&mut out, age::armor::Format::AsciiArmor)
                .unwrap();
        let mut w = encryptor.wrap_output(armor).unwrap();
        w.write_all(&plain).unwrap();
        w.finish().unwrap().finish().unwrap();
    }
    std::fs::write(&identity, &out).unwrap();
    std::fs::remove_file(env.home.join(".ssh/id_ed25519")).unwrap();

    let (code, v) = env.json("backup-rollback", &["one"]);
    assert_eq!(code, 3, "no passphrase: partial {v:#}");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("BACKUP_AGE_PASSPHRASE"),
        "{v:#}"
    );
    let (code, v, _) = env.run(
        "backup-rollback",
        &["one"],
        &[("BACKUP_AGE_PASSPHRASE", "correct horse")],
    );
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(
        std::fs::read(env.home.join(".ssh/id_ed25519")).unwrap(),
        secret_files()[0].1
    );
}

#[test]
fn init_secrets_is_idempotent() {
    let env = TestEnv::new();
    let r1 = init_secrets(&env);
    let (code, v) = env.json("backup-create", &["--init-secrets"]);
    assert_eq!(code, 0);
    assert_eq!(v["changed"], false, "{v:#}");
    assert_eq!(v["secrets"]["recipient"], r1.as_str());
    let mode = std::fs::metadata(env.home.join(".config/dotfiles-backup/identity.txt"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn prune_repacks_sealed_blobs_and_they_still_restore() {
    let env = home_with_secrets();
    // A big secret sealed into the same pack as the others; once it is forgotten
    // that pack is mostly garbage and is repacked.
    env.write(".config/big.key", &noise(2 << 20, 5), 0o600);
    init_secrets(&env);
    checkpoint(&env, "one");
    std::fs::remove_file(env.home.join(".config/big.key")).unwrap();
    checkpoint(&env, "two");
    let packs_before = common::names_in(&env.repo, "packs");
    let (code, v) = env.json("backup-prune", &["--forget", "one"]);
    assert_eq!(code, 0, "{v:#}");
    assert!(v["stats"]["blobs_repacked"].as_u64().unwrap() >= 7, "{v:#}");
    assert_ne!(common::names_in(&env.repo, "packs"), packs_before);
    let (code, v) = env.json("backup-verify", &["--read-data"]);
    assert_eq!(code, 0, "{v:#}");
    let target = env.tmp.path().join("restored");
    let (code, v) = env.json(
        "backup-restore",
        &["two", "--target", target.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{v:#}");
    let restored = all_file_bytes(&target);
    for (rel, bytes) in secret_files() {
        assert!(
            restored
                .iter()
                .any(|(p, b)| p.ends_with(rel) && b == &bytes),
            "{rel}"
        );
    }
}

#[test]
fn a_damaged_sealed_blob_is_found_by_verify_and_never_restored() {
    let env = home_with_secrets();
    init_secrets(&env);
    checkpoint(&env, "one");
    // Flip a byte inside the first sealed blob of some pack.
    let (code, v) = env.json("backup-list", &["one", "--files"]);
    assert_eq!(code, 0);
    let packs = common::names_in(&env.repo, "packs");
    let mut flipped = false;
    for p in &packs {
        let mut bytes = std::fs::read(p).unwrap();
        if let Some(pos) = bytes
            .windows(21)
            .position(|w| w == b"age-encryption.org/v1")
        {
            bytes[pos + 200] ^= 0x01;
            std::fs::write(p, &bytes).unwrap();
            flipped = true;
            break;
        }
    }
    assert!(flipped, "no sealed blob found in {packs:?}; {v:#}");
    let (code, v) = env.json("backup-verify", &["--read-data"]);
    assert_eq!(code, 6, "{v:#}");
    let problems = v["problems"].as_array().unwrap();
    assert!(
        problems.iter().any(|p| p["code"] == "corrupt_blob"),
        "{v:#}"
    );
    let target = env.tmp.path().join("restored");
    let (code, v) = env.json(
        "backup-restore",
        &["one", "--target", target.to_str().unwrap()],
    );
    assert_eq!(code, 3, "{v:#}");
    // The damaged secret is reported and absent; every secret that was written
    // is byte-for-byte the original, never corrupt plaintext.
    let failed: Vec<&str> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(!failed.is_empty(), "{v:#}");
    let restored = all_file_bytes(&target);
    for (rel, bytes) in secret_files() {
        match restored.iter().find(|(p, _)| p.ends_with(rel)) {
            Some((_, got)) => assert_eq!(got, &bytes, "{rel} restored corrupt"),
            None => assert!(failed.iter().any(|m| m.contains(rel)), "{rel}: {v:#}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Issue 20: credentials that real tools keep, found by path or by content.

/// `len` random characters from `alphabet` (fresh for every run: made by the test).
fn random_text(len: usize, alphabet: &[u8]) -> String {
    let mut raw = vec![0u8; len];
    getrandom::fill(&mut raw).unwrap();
    raw.iter()
        .map(|b| alphabet[*b as usize % alphabet.len()] as char)
        .collect()
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const HEX: &[u8] = b"0123456789abcdef";
const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// An armoured block with a random base64 body.
fn armoured(kind: &str, body_len: usize) -> (String, String) {
    let body = random_text(body_len, B64);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let body = lines.join("\n");
    (
        format!("-----BEGIN {kind}-----\n{body}\n-----END {kind}-----\n"),
        body,
    )
}

/// One fake credential: where it lives, the file, the secret part of it,
/// and the detection rule expected (`None`: found by its path).
struct Credential {
    path: &'static str,
    file: Vec<u8>,
    secret: Vec<u8>,
    rule: Option<&'static str>,
}

fn credential_corpus() -> Vec<Credential> {
    let mut out = Vec::new();
    let mut add = |path: &'static str, file: String, secret: String, rule: Option<&'static str>| {
        assert!(file.contains(&secret) && secret.len() >= 16, "{path}");
        out.push(Credential {
            path,
            file: file.into_bytes(),
            secret: secret.into_bytes(),
            rule,
        });
    };
    // Found by path (the default secret patterns).
    let t = format!("ghp_{}", random_text(36, ALNUM));
    add(
        ".config/git/credentials",
        format!("https://me:{t}@github.com\n"),
        t,
        None,
    );
    let t = random_text(40, ALNUM);
    add(
        ".config/rclone/rclone.conf",
        format!("[s3]\ntype = s3\naccess_key_id = id\nsecret_access_key = {t}\n"),
        t,
        None,
    );
    let t = random_text(72, ALNUM);
    add(
        ".config/gcloud/legacy_credentials/me@example.com/adc.json",
        format!("{{\"client_id\": \"x\", \"refresh_token\": \"1//{t}\", \"type\": \"authorized_user\"}}\n"),
        t,
        None,
    );
    let t = random_text(96, ALNUM);
    add(
        ".config/gcloud/access_tokens.db",
        format!("SQLite format 3\0ya29.{t}\0"),
        t,
        None,
    );
    let age_a = age::x25519::Identity::generate();
    let age_b = age::x25519::Identity::generate();
    use age::secrecy::ExposeSecret;
    let a = age_a.to_string().expose_secret().to_string();
    add(
        ".config/chezmoi/key.txt",
        format!("# public key: {}\n{a}\n", age_a.to_public()),
        a[16..].to_string(),
        None,
    );
    let b = age_b.to_string().expose_secret().to_string();
    add(
        ".config/age/keys.txt",
        format!("# created: today\n{b}\n"),
        b[16..].to_string(),
        None,
    );
    let t = random_text(300, B64);
    add(
        ".config/borg/keys/home_backup",
        format!("BORG_KEY {}\n{t}\n", random_text(64, HEX)),
        t,
        None,
    );
    let t = random_text(64, HEX);
    add(
        ".config/doctl/config.yaml",
        format!("access-token: dop_v1_{t}\ncontext: default\n"),
        t,
        None,
    );
    let t = random_text(200, B64);
    add(".gnupg/secring.gpg", format!("\u{95}\u{1}{t}"), t, None);
    // Found by content.
    let (key, body) = armoured("OPENSSH PRIVATE KEY", 400);
    add(".ssh/github", key, body, Some("openssh-private-key"));
    let t = format!("npm_{}", random_text(36, ALNUM));
    add(
        ".npmrc",
        format!("registry=https://registry.npmjs.org/\n//registry.npmjs.org/:_authToken={t}\n"),
        t,
        Some("npm-token"),
    );
    let t = random_text(24, ALNUM);
    add(
        ".config/app/.env",
        format!("DEBUG=1\nDATABASE_PASSWORD={t}\n"),
        t,
        Some("password-or-token-assignment"),
    );
    let t = random_text(32, ALNUM);
    add(
        ".config/zsh/.zshrc",
        format!("alias k=kubectl\nexport OPENAI_API_KEY=\"sk-{t}\"\n"),
        t,
        Some("password-or-token-assignment"),
    );
    let (key, body) = armoured("PGP PRIVATE KEY BLOCK", 600);
    add(".config/app/backup.asc", key, body, Some("pgp-private-key"));
    let (key, body) = armoured("RSA PRIVATE KEY", 800);
    add(
        ".config/tool/server-key.txt",
        key,
        body,
        Some("pem-private-key"),
    );
    let t = random_text(40, ALNUM);
    add(
        ".config/tool/settings.ini",
        format!(
            "[aws]\naws_access_key_id = AKIA{}\naws_secret_access_key = {t}\n",
            random_text(16, UPPER)
        ),
        t,
        Some("aws-access-key"),
    );
    let t = random_text(24, ALNUM);
    add(
        ".config/chat/slack.json",
        format!("{{\"workspace\": \"w\", \"token\": \"xoxb-1234567890-{t}\"}}\n"),
        t,
        Some("slack-token"),
    );
    let t = format!("ghp_{}", random_text(36, ALNUM));
    add(
        ".config/tool/hub.yml",
        format!("github.com:\n- user: me\n  oauth_token: {t}\n"),
        t,
        Some("github-token"),
    );
    // Tracked roots that are themselves files: the name rule still applies.
    let t = random_text(24, ALNUM);
    add(
        ".bashrc",
        format!("alias ll='ls -l'\nexport MY_API_TOKEN={t}\n"),
        t,
        Some("password-or-token-assignment"),
    );
    let t = random_text(40, ALNUM);
    add(
        ".profile",
        format!("export PATH=$HOME/bin:$PATH\nexport OPENAI_API_KEY=sk-proj-{t}\n"),
        t,
        Some("openai-or-anthropic-key"),
    );
    let t = random_text(20, ALNUM);
    add(
        ".config/git/config",
        format!("[url \"https://me:{t}@github.com/\"]\n\tinsteadOf = https://github.com/\n"),
        t,
        Some("url-credentials"),
    );
    let t = random_text(40, B64);
    add(
        ".config/containers/auth.json",
        format!("{{\"auths\": {{\"quay.io\": {{\"auth\": \"{t}\"}}}}}}\n"),
        t,
        None,
    );
    out
}

fn corpus_home() -> (TestEnv, Vec<Credential>) {
    let env = TestEnv::with_dotfiles();
    let corpus = credential_corpus();
    for c in &corpus {
        env.write(c.path, &c.file, 0o600);
    }
    env.write(".config/app/settings.toml", b"theme = \"dark\"\n", 0o644);
    env.write(
        ".config/dotfiles-backup/config.toml",
        b"[track]\nconfig = [\"~/.ssh\", \"~/.npmrc\", \"~/.gnupg\", \"~/.config\", \"~/.zshrc\", \"~/.bashrc\", \"~/.profile\"]\n",
        0o644,
    );
    (env, corpus)
}

fn paths_with_code(v: &Value, code: &str) -> Vec<String> {
    v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["code"] == code)
        .map(|w| w["path"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_credential_corpus_leaves_no_trace_anywhere() {
    let (env, corpus) = corpus_home();
    let external = env.tmp.path().join("external");
    std::fs::create_dir_all(&external).unwrap();
    let drive = format!("drive={}", external.display());
    let extra = [
        ("BACKUP_EXTERNAL", drive.as_str()),
        ("BACKUP_RETRY_BASE_MS", "5"),
    ];
    let mut outputs: Vec<u8> = Vec::new();
    let mut run = |args: &[&str], bin: &str| -> Value {
        let mut argv = vec!["--json"];
        argv.extend(args);
        let out = env.output(bin, &argv, &extra);
        outputs.extend(&out.stdout);
        outputs.extend(&out.stderr);
        // The human form too (stdout and stderr).
        let human = env.output(bin, &[&["--verbose"][..], args].concat(), &extra);
        outputs.extend(&human.stdout);
        outputs.extend(&human.stderr);
        let (code, v) = common::parse_envelope(&out);
        assert_eq!(code, 0, "{bin}: {v:#}");
        v
    };

    // Without a recipient every credential is skipped, by name, and says why.
    let v = run(&["manual", "one"], "backup-checkpoint");
    assert_eq!(v["status"], "success", "{v:#}");
    let skipped = paths_with_code(&v, "secret_skipped");
    let detected = paths_with_code(&v, "secret_detected");
    for c in &corpus {
        let shown = format!("~/{}", c.path);
        assert!(skipped.contains(&shown), "{shown} not skipped: {skipped:?}");
        assert_eq!(
            detected.contains(&shown),
            c.rule.is_some(),
            "{shown}: {detected:?}"
        );
        if let Some(rule) = c.rule {
            let w = v["warnings"]
                .as_array()
                .unwrap()
                .iter()
                .find(|w| w["code"] == "secret_detected" && w["path"] == shown.as_str())
                .unwrap();
            assert!(w["message"].as_str().unwrap().contains(rule), "{w:#}");
        }
    }
    // Ordinary files are not flagged.
    assert!(!detected
        .iter()
        .any(|p| p.ends_with("settings.toml") || p.ends_with("init.lua")));

    // With a recipient all of them are stored encrypted, and come back.
    let (code, v) = env.json("backup-create", &["--init-secrets"]);
    assert_eq!(code, 0, "{v:#}");
    let v = run(&["manual", "two"], "backup-checkpoint");
    assert_eq!(v["status"], "success", "{v:#}");
    assert!(paths_with_code(&v, "secret_skipped").is_empty(), "{v:#}");
    assert_eq!(v["stats"]["secrets_sealed"], corpus.len() as u64, "{v:#}");
    // A second run with nothing changed stores nothing new.
    let v = run(&["manual", "three"], "backup-checkpoint");
    assert_eq!(v["stats"]["new_blobs"], 0, "{v:#}");
    let entries = listed(&env, "two");
    for c in &corpus {
        let shown = format!("~/{}", c.path);
        let e = entries
            .iter()
            .find(|e| e["path"] == shown.as_str())
            .unwrap();
        assert_eq!(e["encrypted"], true, "{e:#}");
    }
    run(&["two", "--files"], "backup-list");
    run(&["--read-data"], "backup-verify");
    let target = env.tmp.path().join("restored");
    run(
        &["two", "--target", target.to_str().unwrap()],
        "backup-restore",
    );
    for c in &corpus {
        let got = std::fs::read(target.join(c.path)).unwrap();
        assert_eq!(got, c.file, "{} restored", c.path);
    }

    // No 16-byte window of any credential in the repository (packs, index,
    // trees, records, run log, cache), the external copy, or any output.
    let secrets: Vec<(&str, Vec<u8>)> = corpus.iter().map(|c| (c.path, c.secret.clone())).collect();
    let w = windows(&secrets);
    let planted = leaks(&env.home, &w);
    assert_eq!(
        planted.len(),
        corpus.len(),
        "the scanner finds planted ones: {planted:?}"
    );
    assert!(
        external.join("packs").is_dir(),
        "the external copy was made"
    );
    for dir in [&env.repo, &external] {
        assert_eq!(
            leaks(dir, &w),
            Vec::<PathBuf>::new(),
            "credential bytes in {}",
            dir.display()
        );
    }
    assert!(env.repo.join("logs").is_dir(), "the run log exists");
    assert!(
        !outputs
            .windows(16)
            .any(|x| w.contains(&<[u8; 16]>::try_from(x).unwrap())),
        "credential bytes in the JSON or human output"
    );
}

#[test]
fn a_path_marked_public_is_stored_even_when_its_content_looks_secret() {
    let env = TestEnv::with_dotfiles();
    let fixture = b"# test fixture, not a credential\nAPI_TOKEN=abcdefgh12345678\n";
    env.write(".config/demo/.env", fixture, 0o644);
    env.write(".config/other/.env", fixture, 0o644);
    env.write(
        ".config/dotfiles-backup/config.toml",
        b"[track]\nconfig = [\"~/.config\"]\n[classes]\npublic = [\"**/*.pub\", \"**/.config/demo/.env\"]\n",
        0o644,
    );
    let v = checkpoint(&env, "one");
    assert_eq!(
        paths_with_code(&v, "secret_detected"),
        vec!["~/.config/other/.env"]
    );
    assert_eq!(
        paths_with_code(&v, "secret_skipped"),
        vec!["~/.config/other/.env"]
    );
    let entries = listed(&env, "one");
    let demo = entries
        .iter()
        .find(|e| e["path"] == "~/.config/demo/.env")
        .unwrap();
    assert_eq!(demo["sha256"], common::sha256_hex(fixture), "{demo:#}");
    let other = entries
        .iter()
        .find(|e| e["path"] == "~/.config/other/.env")
        .unwrap();
    assert!(other["sha256"].is_null(), "{other:#}");
}
