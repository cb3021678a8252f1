//! Secret-class files, encrypted with age before they reach any pack.
//!
//! Writing needs only public keys (recipients); reading needs an identity.
//! That split is the point: a checkpoint in the middle of an unattended
//! Ansible run can store `~/.ssh/id_ed25519` safely, and only a person with
//! the identity file (kept in a password manager) can bring it back.
//!
//! Deduplication without leaking equality: a secret blob is named by
//! HMAC-SHA256 under a random 32-byte *secret-id key* instead of the SHA-256 of
//! its content, so someone holding the repository cannot test a guess ("is
//! this token `hunter2`?") against blob names or tree entries. Trees record
//! secret files as `sealed: {id, key}` with no plain hash.
//!
//! Keys: one secret-id key per repository and recipient set (`key` = the first
//! 16 hex digits of the SHA-256 of the sorted recipients), so changing
//! recipients re-encrypts content to the new set instead of reusing blobs the
//! new identity could not open. The key is stored twice:
//! * `keys/<key>.age` in the repository, encrypted to the recipients: travels
//!   with every copy, immutable once written;
//! * `<key_dir>/<repo id>/<key>.key` in plain text, *outside* the repository
//!   (default `~/.local/state/dotfiles-backup/keys`), so checkpoints can name
//!   blobs without the identity and a copied repository never carries it.
//!
//! If the plain key is lost (a new machine), the first run with the identity
//! unwraps `keys/<key>.age` and writes it back; without the identity, secret
//! files are skipped with a warning rather than given a second key.

pub mod detect;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use age::secrecy::SecretString;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::atomic::Dir;
use crate::config::SecretSettings;
use crate::error::{Error, IoContext, Result};
use crate::exit::ExitCode;
use crate::hash::Hash;
use crate::paths::display_path;
use crate::repo::layout;
use crate::repo::Repository;

/// Pack flag of a blob holding an age file (see `docs/format.md`).
pub use crate::repo::pack::FLAG_AGE;

/// Environment variable holding the passphrase of a passphrase-protected identity file.
pub const PASSPHRASE_ENV: &str = "BACKUP_AGE_PASSPHRASE";

/// Keep the identity's passphrase out of a child's environment: it unlocks
/// every stored secret, and no hook, package manager or rclone needs it.
pub fn withhold_from(cmd: &mut std::process::Command) -> &mut std::process::Command {
    cmd.env_remove(PASSPHRASE_ENV)
}

type HmacSha256 = Hmac<Sha256>;

/// Which secret-id key a recipient set uses.
pub fn key_name(recipients: &[String]) -> String {
    let mut sorted: Vec<&str> = recipients.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    let mut text = String::from("dotfiles-backup secret-id key v1\n");
    for r in sorted {
        text.push_str(r);
        text.push('\n');
    }
    Hash::of(text.as_bytes()).to_hex()[..16].to_string()
}

fn valid_key_name(name: &str) -> bool {
    name.len() == 16 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

fn keyed_id(key: &[u8; 32], content: &[u8]) -> Hash {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(content);
    let out = mac.finalize().into_bytes();
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(&out);
    Hash(bytes)
}

fn plain_key_path(settings: &SecretSettings, repo: &Repository, name: &str) -> Option<PathBuf> {
    settings
        .key_dir
        .as_ref()
        .map(|d| d.join(&repo.config.id).join(format!("{name}.key")))
}

fn wrapped_key_path(repo: &Repository, name: &str) -> PathBuf {
    repo.sub(layout::KEYS).join(format!("{name}.age"))
}

fn read_plain_key(path: &Path) -> Result<Option<[u8; 32]>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("reading secret-id key", path, &e)),
    };
    parse_key(text.trim().as_bytes()).map(Some).ok_or_else(|| {
        Error::corrupt(
            "corrupt_key",
            path,
            format!(
                "{} is not a secret-id key (64 hex digits)",
                display_path(path)
            ),
        )
        .with_hint("delete it: the next run with the identity recreates it from the repository")
    })
}

fn parse_key(bytes: &[u8]) -> Option<[u8; 32]> {
    let raw = hex::decode(bytes).ok()?;
    raw.try_into().ok()
}

/// Create a directory chain with mode 0700 (keys are nobody else's business).
fn private_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .ctx("creating directory", path)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    private_dir(parent)?;
    let name = path.file_name().unwrap_or(OsStr::new("key"));
    Dir::open(parent)?.write_atomic(name, bytes, 0o600)
}

/// Encrypts secret content for one run. Needs only public keys.
pub struct Sealer {
    recipients: Vec<age::x25519::Recipient>,
    key: [u8; 32],
    /// The key's name (stored in tree entries).
    pub key_name: String,
}

/// Why secrets cannot be stored in this run (each becomes a `secret_skipped` warning).
#[derive(Debug, Clone)]
pub struct SealUnavailable(pub String);

impl Sealer {
    /// The sealer for `repo`, creating the secret-id key on first use (unless
    /// `dry_run`). `Ok(Err(_))` says why secrets must be skipped this run.
    pub fn prepare(
        repo: Option<&Repository>,
        settings: &SecretSettings,
        dry_run: bool,
    ) -> Result<std::result::Result<Sealer, SealUnavailable>> {
        if settings.recipients.is_empty() {
            return Ok(Err(SealUnavailable(
                "no age recipient is configured, and secrets are never stored in plain text; run `backup-create --init-secrets` (or list recipients under [secrets] in the config) to store them encrypted".into(),
            )));
        }
        let recipients: Vec<age::x25519::Recipient> = settings
            .recipients
            .iter()
            .filter_map(|r| r.parse().ok())
            .collect();
        let name = key_name(&settings.recipients);
        let Some(repo) = repo else {
            // Dry run before the repository exists: ids are only for the plan.
            return Ok(Ok(Sealer {
                recipients,
                key: [0; 32],
                key_name: name,
            }));
        };
        let plain_path = plain_key_path(settings, repo, &name);
        let wrapped_path = wrapped_key_path(repo, &name);
        let mut key = match &plain_path {
            Some(p) => read_plain_key(p)?,
            None => None,
        };
        let wrapped_exists = wrapped_path.is_file();
        if key.is_none() && wrapped_exists {
            // A repository copied or restored onto this machine: unwrap with the identity.
            match Opener::load(settings)? {
                Some(opener) => key = Some(opener.unwrap_key(repo, &name)?),
                None => {
                    return Ok(Err(SealUnavailable(format!(
                        "the secret-id key of this repository ({}) is encrypted and no identity is available to unlock it; run once with the identity file ({}) present",
                        display_path(&wrapped_path),
                        settings
                            .identity_file
                            .as_deref()
                            .map(display_path)
                            .unwrap_or_else(|| "secrets.identity_file".into())
                    ))))
                }
            }
            if let (Some(p), Some(k), false) = (&plain_path, &key, dry_run) {
                write_private(p, hex::encode(k).as_bytes())?;
            }
        }
        let key = match key {
            Some(k) => k,
            None => {
                let mut k = [0u8; 32];
                getrandom::fill(&mut k).map_err(|e| {
                    Error::new(
                        ExitCode::Failed,
                        "no_randomness",
                        format!("cannot read random bytes for a secret-id key: {e}"),
                    )
                })?;
                if !dry_run {
                    let Some(p) = &plain_path else {
                        return Ok(Err(SealUnavailable(
                            "$HOME is not set, so there is no place for the secret-id key; set HOME or BACKUP_KEY_DIR".into(),
                        )));
                    };
                    // Plain copy first: if we crash before the wrapped copy is
                    // written, the next run finds the plain key and writes it.
                    write_private(p, hex::encode(k).as_bytes())?;
                }
                k
            }
        };
        let sealer = Sealer {
            recipients,
            key,
            key_name: name,
        };
        if !dry_run && !wrapped_exists {
            let wrapped = sealer.seal(hex::encode(key).as_bytes())?;
            let dir = repo.sub(layout::KEYS);
            private_dir(&dir)?;
            Dir::open(&dir)?.write_atomic(
                OsStr::new(&format!("{}.age", sealer.key_name)),
                &wrapped,
                0o600,
            )?;
        }
        Ok(Ok(sealer))
    }

    /// The blob id of `content`: HMAC-SHA256 under the secret-id key.
    pub fn id(&self, content: &[u8]) -> Hash {
        keyed_id(&self.key, content)
    }

    /// Encrypt `content` to every recipient (a binary age file).
    pub fn seal(&self, content: &[u8]) -> Result<Vec<u8>> {
        let failed = |e: &dyn std::fmt::Display| {
            Error::new(
                ExitCode::Internal,
                "encryption_failed",
                format!("age encryption failed: {e}"),
            )
        };
        let encryptor = age::Encryptor::with_recipients(
            self.recipients.iter().map(|r| r as &dyn age::Recipient),
        )
        .map_err(|e| failed(&e))?;
        let mut out = Vec::with_capacity(content.len() + 256);
        let mut w = encryptor.wrap_output(&mut out).map_err(|e| failed(&e))?;
        w.write_all(content).map_err(|e| failed(&e))?;
        w.finish().map_err(|e| failed(&e))?;
        Ok(out)
    }
}

/// Decrypts secret content. Needs the identity.
pub struct Opener {
    identities: Vec<Box<dyn age::Identity + Send + Sync>>,
    settings: SecretSettings,
    keys: Mutex<HashMap<String, [u8; 32]>>,
    /// Where the identity came from (for messages).
    pub source: PathBuf,
}

impl Opener {
    /// Load the identity file; `Ok(None)` when none is configured or it does not exist.
    /// A passphrase-protected file is opened with `BACKUP_AGE_PASSPHRASE`.
    pub fn load(settings: &SecretSettings) -> Result<Option<Opener>> {
        let Some(path) = &settings.identity_file else {
            return Ok(None);
        };
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Error::io("reading identity file", path, &e)
                    .with_hint("make the identity file readable by you (chmod 600), or point secrets.identity_file / BACKUP_AGE_IDENTITY at your copy"))
            }
        };
        let bad = |why: String| {
            Error::usage("bad_identity", format!("{}: {why}", display_path(path))).with_path(path)
        };
        let plain = if is_age_file(&bytes) {
            let passphrase = std::env::var(PASSPHRASE_ENV).map_err(|_| {
                bad("the identity file is passphrase-protected".into()).with_hint(format!(
                    "set {PASSPHRASE_ENV} to its passphrase for this command"
                ))
            })?;
            let reader = age::armor::ArmoredReader::new(&bytes[..]);
            let decryptor = age::Decryptor::new(reader)
                .map_err(|e| bad(format!("not a readable age file: {e}")))?;
            let identity = age::scrypt::Identity::new(SecretString::from(passphrase));
            let mut out = Vec::new();
            decryptor
                .decrypt(std::iter::once(&identity as &dyn age::Identity))
                .map_err(|e| {
                    bad(format!("cannot decrypt the identity file: {e}"))
                        .with_hint(format!("check {PASSPHRASE_ENV}"))
                })?
                .read_to_end(&mut out)
                .map_err(|e| bad(format!("cannot decrypt the identity file: {e}")))?;
            out
        } else {
            bytes
        };
        let identities = age::IdentityFile::from_buffer(&plain[..])
            .map_err(|e| bad(format!("not an age identity file: {e}")))?
            .into_identities()
            .map_err(|e| bad(format!("unusable identity: {e}")))?;
        if identities.is_empty() {
            return Err(bad(
                "holds no identity (expected a line starting with AGE-SECRET-KEY-1)".into(),
            ));
        }
        Ok(Some(Opener {
            identities,
            settings: settings.clone(),
            keys: Mutex::new(HashMap::new()),
            source: path.clone(),
        }))
    }

    fn decrypt(&self, ciphertext: &[u8]) -> std::result::Result<Vec<u8>, String> {
        let decryptor = age::Decryptor::new_buffered(ciphertext).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        decryptor
            .decrypt(
                self.identities
                    .iter()
                    .map(|i| i.as_ref() as &dyn age::Identity),
            )
            .map_err(|e| e.to_string())?
            .read_to_end(&mut out)
            .map_err(|e| e.to_string())?;
        Ok(out)
    }

    /// Check a wrapped secret-id key file's bytes (`keys/<name>.age`): it
    /// decrypts with the identity and holds a key. For `backup-verify`.
    pub fn check_wrapped(&self, wrapped: &[u8]) -> std::result::Result<(), String> {
        let plain = self.decrypt(wrapped)?;
        parse_key(plain.trim_ascii())
            .map(|_| ())
            .ok_or_else(|| "it decrypts but does not hold a key".to_string())
    }

    /// The secret-id key `name` of `repo`: the local plain copy, else unwrapped from `keys/`.
    pub fn unwrap_key(&self, repo: &Repository, name: &str) -> Result<[u8; 32]> {
        if let Some(k) = self.keys.lock().map_err(|_| poisoned())?.get(name) {
            return Ok(*k);
        }
        if !valid_key_name(name) {
            return Err(Error::corrupt(
                "corrupt_tree",
                repo.root(),
                format!("secret-id key name {name:?} is malformed"),
            ));
        }
        let key = match plain_key_path(&self.settings, repo, name) {
            Some(p) => read_plain_key(&p)?,
            None => None,
        };
        let key = match key {
            Some(k) => k,
            None => {
                let path = wrapped_key_path(repo, name);
                let wrapped = std::fs::read(&path).map_err(|e| {
                    let err = Error::io("reading secret-id key", &path, &e);
                    if e.kind() == std::io::ErrorKind::NotFound {
                        Error::corrupt("missing_key", &path, err.message)
                    } else {
                        err
                    }
                })?;
                let plain = self.decrypt(&wrapped).map_err(|why| {
                    Error::new(
                        ExitCode::Failed,
                        "secret_not_decrypted",
                        format!(
                            "{} cannot be decrypted with the identity in {}: {why}",
                            display_path(&path),
                            display_path(&self.source)
                        ),
                    )
                    .with_path(&path)
                    .with_hint("use the identity whose public key was a recipient when these secrets were stored")
                })?;
                parse_key(plain.trim_ascii()).ok_or_else(|| {
                    Error::corrupt(
                        "corrupt_key",
                        &path,
                        format!("{} does not hold a key", display_path(&path)),
                    )
                })?
            }
        };
        self.keys
            .lock()
            .map_err(|_| poisoned())?
            .insert(name.to_string(), key);
        Ok(key)
    }

    /// Decrypt a sealed blob and check it against its keyed id.
    pub fn open(
        &self,
        repo: &Repository,
        key: &str,
        id: &Hash,
        ciphertext: &[u8],
    ) -> Result<Vec<u8>> {
        let plain = self.decrypt(ciphertext).map_err(|why| {
            Error::new(
                ExitCode::Failed,
                "secret_not_decrypted",
                format!("blob {} cannot be decrypted: {why}", id.short()),
            )
            .with_hint(format!(
                "use the identity whose public key was a recipient when it was stored (identity file: {})",
                display_path(&self.source)
            ))
        })?;
        let k = self.unwrap_key(repo, key)?;
        if keyed_id(&k, &plain) != *id {
            return Err(Error::corrupt(
                "corrupt_blob",
                repo.root(),
                format!(
                    "secret blob {} decrypts to content that does not match its id",
                    id.short()
                ),
            ));
        }
        Ok(plain)
    }
}

fn poisoned() -> Error {
    Error::new(
        ExitCode::Internal,
        "internal",
        "secret key cache lock poisoned",
    )
}

fn is_age_file(bytes: &[u8]) -> bool {
    bytes.starts_with(b"age-encryption.org/")
        || bytes.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----")
}

/// What `--init-secrets` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InitReport {
    /// The identity file (private key), 0600.
    pub identity_file: String,
    /// The recipients file (public keys).
    pub recipients_file: String,
    /// The public key secrets are now encrypted to.
    pub recipient: String,
    /// Whether the identity file was created by this run.
    pub created_identity: bool,
    /// Whether the recipient was added to the recipients file by this run.
    pub added_recipient: bool,
}

/// Create an identity (if absent) and make its public key a recipient. Idempotent.
pub fn init(settings: &SecretSettings, dry_run: bool) -> Result<InitReport> {
    let need = |what: &str| {
        Error::usage("home_not_set", format!("no {what} path: $HOME is not set"))
            .with_hint("set HOME, or set secrets.identity_file and secrets.recipients_file")
    };
    let identity_path = settings
        .identity_file
        .clone()
        .ok_or_else(|| need("identity file"))?;
    let recipients_path = settings
        .recipients_file
        .clone()
        .ok_or_else(|| need("recipients file"))?;
    let (recipient, created_identity) = match Opener::load(settings)? {
        Some(opener) => {
            // Reuse the first X25519 identity in the file.
            let text = std::fs::read_to_string(&identity_path).unwrap_or_default();
            let first = text
                .lines()
                .map(str::trim)
                .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
                .and_then(|l| l.parse::<age::x25519::Identity>().ok());
            match first {
                Some(id) => (id.to_public().to_string(), false),
                None => {
                    drop(opener);
                    return Err(Error::usage(
                        "bad_identity",
                        format!(
                            "{} is passphrase-protected or holds no X25519 key, so its public key cannot be derived here",
                            display_path(&identity_path)
                        ),
                    )
                    .with_hint("add its public key (age1…) to secrets.recipients in the config yourself"));
                }
            }
        }
        None => {
            let id = age::x25519::Identity::generate();
            let public = id.to_public().to_string();
            if !dry_run {
                use age::secrecy::ExposeSecret;
                let text = format!(
                    "# created by backup-create --init-secrets on {}\n# public key: {public}\n# Keep a copy of this file somewhere safe (a password manager):\n# without it, encrypted secrets cannot be restored.\n{}\n",
                    crate::time::now_rfc3339(),
                    id.to_string().expose_secret()
                );
                write_private(&identity_path, text.as_bytes())?;
            }
            (public, true)
        }
    };
    let existing = match std::fs::read_to_string(&recipients_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::io("reading recipients file", &recipients_path, &e)),
    };
    let present =
        existing.lines().any(|l| l.trim() == recipient) || settings.recipients.contains(&recipient);
    if !present && !dry_run {
        let mut text = existing.clone();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&recipient);
        text.push('\n');
        let parent = recipients_path.parent().unwrap_or(Path::new("/"));
        private_dir(parent)?;
        let name = recipients_path
            .file_name()
            .unwrap_or(OsStr::new("recipients.txt"));
        Dir::open(parent)?.write_atomic(name, text.as_bytes(), 0o644)?;
    }
    Ok(InitReport {
        identity_file: display_path(&identity_path),
        recipients_file: display_path(&recipients_path),
        recipient,
        created_identity,
        added_recipient: !present,
    })
}

/// `backup-create --init-secrets`: fill the envelope.
pub fn run_init(
    settings: &crate::config::Settings,
    dry_run: bool,
    env: &mut crate::report::Envelope,
) -> Result<()> {
    env.dry_run = dry_run;
    let report = init(&settings.secrets, dry_run)?;
    env.changed = report.created_identity || report.added_recipient;
    if report.created_identity {
        env.warnings.push(crate::report::Warning::at(
            "identity_created",
            report.identity_file.clone(),
            format!(
                "{} holds the only key that can restore your encrypted secrets: keep a copy somewhere safe (a password manager), not only on this machine",
                report.identity_file
            ),
        ));
    }
    env.put("secrets", &report);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_name_ignores_recipient_order() {
        let a = "age1aaa".to_string();
        let b = "age1bbb".to_string();
        assert_eq!(
            key_name(&[a.clone(), b.clone()]),
            key_name(&[b.clone(), a.clone()])
        );
        assert_ne!(key_name(std::slice::from_ref(&a)), key_name(&[a, b]));
    }

    #[test]
    fn keyed_ids_differ_from_plain_hashes_and_between_keys() {
        let content = b"token=hunter2";
        let k1 = [1u8; 32];
        let k2 = [2u8; 32];
        assert_ne!(keyed_id(&k1, content), Hash::of(content));
        assert_ne!(keyed_id(&k1, content), keyed_id(&k2, content));
        assert_eq!(keyed_id(&k1, content), keyed_id(&k1, content));
    }

    #[test]
    fn seal_then_open_round_trips_and_ciphertext_hides_plaintext() {
        let id = age::x25519::Identity::generate();
        let sealer = Sealer {
            recipients: vec![id.to_public()],
            key: [7; 32],
            key_name: "0123456789abcdef".into(),
        };
        let secret = b"-----BEGIN OPENSSH PRIVATE KEY-----\nsecret bytes\n";
        let c1 = sealer.seal(secret).unwrap();
        let c2 = sealer.seal(secret).unwrap();
        assert_ne!(c1, c2, "age is randomized");
        assert!(!c1.windows(12).any(|w| w == &secret[..12]));
        let opener = Opener {
            identities: vec![Box::new(id)],
            settings: SecretSettings::default(),
            keys: Mutex::new(HashMap::new()),
            source: PathBuf::from("test"),
        };
        assert_eq!(opener.decrypt(&c1).unwrap(), secret);
    }
}
