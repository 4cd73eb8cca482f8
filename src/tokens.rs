//! Bearer tokens for the HTTP API: the tokens file, the roles, and the
//! check of a presented token.
//!
//! Owns the rule that a token is never stored: the file holds each token's
//! name, role and SHA-256 digest, and a presented token is hashed and
//! compared with every digest in constant time. It never sees a request;
//! `http::auth` decides which role a request needs and asks here who is
//! calling.

use std::fmt;
use std::path::Path;

use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a token allows; each role allows what the ones before it do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read keys, the members, the ring and the metrics.
    Read,
    /// Also write and delete keys.
    Write,
    /// Also leave, remove members and change the keyring.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = TokensError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Role::Read),
            "write" => Ok(Role::Write),
            "admin" => Ok(Role::Admin),
            other => Err(TokensError::Invalid(format!(
                "unknown role {other:?}: expected read, write or admin"
            ))),
        }
    }
}

/// Why a tokens file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("cannot read the tokens file {path}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the tokens file is not valid: {0}")]
    Invalid(String),
    #[error("token name {0:?}: use 1 to 64 letters, digits and -_.@")]
    BadName(String),
}

/// One `[[token]]` table.
#[derive(Clone, Debug)]
pub struct TokenEntry {
    pub name: String,
    pub role: Role,
    digest: [u8; 32],
}

/// Every token a node accepts.
#[derive(Clone, Debug)]
pub struct TokenTable {
    entries: Vec<TokenEntry>,
}

/// The file's shape; unknown fields are refused so that a typo (`roles`,
/// `sha-256`) is an error rather than a token with a default.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    token: Vec<TokenFileEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFileEntry {
    name: String,
    role: Role,
    sha256: String,
}

/// The longest token hashed: far above any token `dnd token new` makes, so
/// that a huge header costs no more than a short one to refuse.
const MAX_TOKEN_BYTES: usize = 256;

/// Every token `dnd token new` makes starts with this, so secret scanners
/// and people can tell one at a glance.
pub const TOKEN_PREFIX: &str = "dnd_";

impl TokenTable {
    /// Reads and checks the tokens file at `path`.
    pub fn load(path: &Path) -> Result<Self, TokensError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// Parses a tokens file: at least one token, names and digests unique,
    /// each digest 64 hex digits.
    pub fn from_toml(text: &str) -> Result<Self, TokensError> {
        let file: TokensFile = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .and_then(|span| text.get(..span.start))
                .map(|before| before.matches('\n').count() + 1);
            TokensError::Invalid(match line {
                Some(line) => format!("line {line}: {}", e.message()),
                None => e.message().to_string(),
            })
        })?;
        if file.token.is_empty() {
            return Err(TokensError::Invalid(
                "it lists no [[token]]; every request would be refused".into(),
            ));
        }
        let mut entries: Vec<TokenEntry> = Vec::with_capacity(file.token.len());
        for entry in file.token {
            check_name(&entry.name)?;
            let digest = parse_digest(&entry.sha256).ok_or_else(|| {
                TokensError::Invalid(format!(
                    "token {:?}: sha256 must be 64 hex digits (the SHA-256 of the token)",
                    entry.name
                ))
            })?;
            if entries.iter().any(|e| e.name == entry.name) {
                return Err(TokensError::Invalid(format!(
                    "token {:?} is listed twice",
                    entry.name
                )));
            }
            if entries.iter().any(|e| e.digest == digest) {
                return Err(TokensError::Invalid(format!(
                    "token {:?} has the same sha256 as another token",
                    entry.name
                )));
            }
            entries.push(TokenEntry {
                name: entry.name,
                role: entry.role,
                digest,
            });
        }
        Ok(TokenTable { entries })
    }

    /// The token's entry, if `token` is one of the table's. Every digest is
    /// compared, each in constant time, so the time taken says nothing of
    /// how close a guess came.
    pub fn authenticate(&self, token: &str) -> Option<&TokenEntry> {
        if token.len() > MAX_TOKEN_BYTES {
            return None;
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.digest.ct_eq(&digest)) {
                found = Some(entry);
            }
        }
        found
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Token names show in logs and in the file: 1 to 64 letters, digits and
/// `-_.@`, so that none needs quoting or can forge a log line.
pub fn check_name(name: &str) -> Result<(), TokensError> {
    let fits = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b));
    if fits {
        Ok(())
    } else {
        Err(TokensError::BadName(name.to_string()))
    }
}

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut digest = [0u8; 32];
    for (i, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(digest)
}

/// A fresh token: the prefix and 32 random bytes in URL-safe base64.
pub fn generate_token() -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The hex SHA-256 of a token, as the tokens file holds it.
pub fn token_digest_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The `[[token]]` table that makes a node accept `token` as `name` (a
/// name [`check_name`] accepts, so that it needs no escaping).
pub fn token_table_entry(name: &str, role: Role, token: &str) -> String {
    format!(
        "[[token]]\nname = \"{name}\"\nrole = \"{role}\"\nsha256 = \"{}\"\n",
        token_digest_hex(token)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_entry_parses_back_and_authenticates_only_its_token() {
        let ops = generate_token();
        let reader = generate_token();
        let text = format!(
            "{}\n{}",
            token_table_entry("ops", Role::Admin, &ops),
            token_table_entry("dash.board@ops", Role::Read, &reader)
        );
        let table = TokenTable::from_toml(&text).expect("parses");
        assert_eq!(table.len(), 2);
        let entry = table.authenticate(&ops).expect("ops is known");
        assert_eq!((entry.name.as_str(), entry.role), ("ops", Role::Admin));
        let entry = table.authenticate(&reader).expect("reader is known");
        assert_eq!(
            (entry.name.as_str(), entry.role),
            ("dash.board@ops", Role::Read)
        );
        assert!(table.authenticate(&generate_token()).is_none());
        assert!(table.authenticate("").is_none());
        assert!(table.authenticate(&"x".repeat(10_000)).is_none());
        // The digest is not the token.
        assert!(table.authenticate(&token_digest_hex(&ops)).is_none());
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Read < Role::Write && Role::Write < Role::Admin);
        assert_eq!("write".parse::<Role>().ok(), Some(Role::Write));
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        let digest = token_digest_hex("t");
        let cases = [
            ("".to_string(), "no [[token]]"),
            (
                format!("[[token]]\nname = \"a\"\nrole = \"root\"\nsha256 = \"{digest}\"\n"),
                "unknown variant",
            ),
            (
                "[[token]]\nname = \"a\"\nrole = \"read\"\nsha256 = \"abc\"\n".into(),
                "64 hex digits",
            ),
            (
                format!("[[token]]\nname = \"a\"\nrole = \"read\"\nsha256 = \"{digest}\"\nroles = 1\n"),
                "unknown field",
            ),
            (
                format!(
                    "[[token]]\nname = \"a\"\nrole = \"read\"\nsha256 = \"{digest}\"\n[[token]]\nname = \"a\"\nrole = \"admin\"\nsha256 = \"{}\"\n",
                    token_digest_hex("u")
                ),
                "listed twice",
            ),
            (
                format!(
                    "[[token]]\nname = \"a\"\nrole = \"read\"\nsha256 = \"{digest}\"\n[[token]]\nname = \"b\"\nrole = \"admin\"\nsha256 = \"{digest}\"\n"
                ),
                "same sha256",
            ),
            ("[[token]]\nname = \"a\"\n".into(), "missing field"),
            ("[[token]]\nname = \"a\"\ngarbage\n".into(), "line 3"),
            (
                format!("[[token]]\nname = \"a b\"\nrole = \"read\"\nsha256 = \"{digest}\"\n"),
                "token name",
            ),
        ];
        for (text, reason) in cases {
            let error = TokenTable::from_toml(&text).expect_err(&text).to_string();
            assert!(error.contains(reason), "{text:?}: {error}");
        }
    }
}
