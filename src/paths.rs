//! Paths: `$HOME`, `~` expansion, display, and lossless byte names.
//!
//! File names on Unix are bytes, not text. Inside snapshots every name is a
//! [`ByteName`]: stored as a JSON string when it is valid UTF-8 (the common,
//! readable case) and as `{"b64": "..."}` otherwise, so any byte sequence
//! survives a round trip exactly. `camino` is deliberately not used for
//! snapshot contents because it rejects such names.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The current user's home directory from `$HOME`, if set and absolute.
pub fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

/// Expand a leading `~` or `~/` against `home`. Other paths are returned as is.
pub fn expand_tilde(path: &Path, home: Option<&Path>) -> Option<PathBuf> {
    let bytes = path.as_os_str().as_bytes();
    if bytes == b"~" {
        return home.map(Path::to_path_buf);
    }
    if let Some(rest) = bytes.strip_prefix(b"~/") {
        return home.map(|h| h.join(OsStr::from_bytes(rest)));
    }
    Some(path.to_path_buf())
}

/// Show a path to a person: `~/...` when under `$HOME`, lossy UTF-8 otherwise.
pub fn display_path(path: &Path) -> String {
    tilde_form(path, home_dir().as_deref())
        .to_string_lossy()
        .into_owned()
}

/// The `~`-relative form of `path` when it is under `home`, else the path itself.
pub fn tilde_form(path: &Path, home: Option<&Path>) -> PathBuf {
    if let Some(home) = home {
        if path == home {
            return PathBuf::from("~");
        }
        if let Ok(rest) = path.strip_prefix(home) {
            return Path::new("~").join(rest);
        }
    }
    path.to_path_buf()
}

/// Make an absolute path lexically normal: collapse `.`, `//` and `..` without touching the disk.
pub fn normalize_lexically(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for comp in path.components() {
        match comp {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// A file name or relative path stored losslessly (any bytes except NUL).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteName(pub Vec<u8>);

impl ByteName {
    /// Borrow as an OS string.
    pub fn as_os_str(&self) -> &OsStr {
        OsStr::from_bytes(&self.0)
    }
    /// Borrow as a relative path.
    pub fn as_path(&self) -> &Path {
        Path::new(self.as_os_str())
    }
    /// Human-readable, lossy.
    pub fn lossy(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
    /// True for the empty name (used for a tracked root itself).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&OsStr> for ByteName {
    fn from(s: &OsStr) -> Self {
        ByteName(s.as_bytes().to_vec())
    }
}

impl From<OsString> for ByteName {
    fn from(s: OsString) -> Self {
        ByteName(s.into_vec())
    }
}

impl From<&str> for ByteName {
    fn from(s: &str) -> Self {
        ByteName(s.as_bytes().to_vec())
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum ByteNameRepr {
    Text(String),
    Bytes { b64: String },
}

impl Serialize for ByteName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => s.serialize_str(text),
            Err(_) => ByteNameRepr::Bytes {
                b64: base64::engine::general_purpose::STANDARD.encode(&self.0),
            }
            .serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for ByteName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match ByteNameRepr::deserialize(d)? {
            ByteNameRepr::Text(t) => Ok(ByteName(t.into_bytes())),
            ByteNameRepr::Bytes { b64 } => base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map(ByteName)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// Why a relative path from a manifest is unsafe to join beneath a root, if it is.
///
/// Accepted: empty (the root itself) or `/`-separated components, none of
/// them empty, `.` or `..`, no NUL, not absolute. Everything else could
/// name something outside the root.
pub fn unsafe_relative_path(rel: &[u8]) -> Option<&'static str> {
    if rel.is_empty() {
        return None;
    }
    if rel.contains(&0) {
        return Some("contains a NUL byte");
    }
    if rel.starts_with(b"/") {
        return Some("is absolute");
    }
    for comp in rel.split(|b| *b == b'/') {
        match comp {
            b"" => return Some("has an empty component"),
            b"." => return Some("has a `.` component"),
            b".." => return Some("has a `..` component"),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_utf8_names_round_trip_through_json() {
        let name = ByteName(vec![b'a', 0xff, 0xfe, b'/', b'z']);
        let json = serde_json::to_string(&name).unwrap();
        assert!(json.contains("b64"));
        let back: ByteName = serde_json::from_str(&json).unwrap();
        assert_eq!(back, name);
        let plain = ByteName::from("héllo");
        assert_eq!(serde_json::to_string(&plain).unwrap(), "\"héllo\"");
    }

    #[test]
    fn tilde_expansion_and_display() {
        let home = Path::new("/home/u");
        assert_eq!(
            expand_tilde(Path::new("~/.zshrc"), Some(home)).unwrap(),
            PathBuf::from("/home/u/.zshrc")
        );
        assert_eq!(
            tilde_form(Path::new("/home/u/.config/nvim"), Some(home)),
            PathBuf::from("~/.config/nvim")
        );
        assert_eq!(
            tilde_form(Path::new("/etc/hosts"), Some(home)),
            PathBuf::from("/etc/hosts")
        );
        assert_eq!(expand_tilde(Path::new("~/x"), None), None);
    }

    #[test]
    fn unsafe_paths_are_named() {
        assert_eq!(unsafe_relative_path(b"a/b"), None);
        assert_eq!(unsafe_relative_path(b""), None);
        assert!(unsafe_relative_path(b"../x").is_some());
        assert!(unsafe_relative_path(b"a/../../x").is_some());
        assert!(unsafe_relative_path(b"/etc/passwd").is_some());
        assert!(unsafe_relative_path(b"a//b").is_some());
        assert!(unsafe_relative_path(b"a/./b").is_some());
        assert!(unsafe_relative_path(b"a\0b").is_some());
    }
}
