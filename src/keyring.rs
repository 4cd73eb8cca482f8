//! The cluster secret and the keyring that holds it: the keys this node
//! accepts, and the one (the primary) it seals with.
//!
//! Owns the keys, what is derived from them, and the keyring file in the
//! data directory that keeps a rotation across restarts. It holds no
//! cryptography of its own: gossip is sealed with RustCrypto's
//! XChaCha20-Poly1305 and the node-to-node channel is Noise (`snow`); each
//! gets its own key derived from the secret with HKDF-SHA256, so no key is
//! ever used by two constructions. It must never log, print or serve a key:
//! only its fingerprint leaves this module in a form anyone may read.
//!
//! A rotation, as in Serf: install the new key on every member (all accept
//! both), make it primary everywhere (all send with it), then remove the
//! old one. Removing the primary is refused.

use std::fmt;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::XChaCha20Poly1305;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// The size of a cluster key.
pub const KEY_BYTES: usize = 32;

/// How many keys one keyring holds at most: a rotation needs two, and every
/// datagram that does not open under the primary is tried against each.
pub const MAX_KEYS: usize = 8;

/// What sealing adds to a gossip datagram: the random nonce and the tag.
pub const GOSSIP_SEAL_OVERHEAD: usize = 24 + 16;

/// The name of the keyring file in the data directory.
pub const KEYRING_FILE: &str = "keyring";

const GOSSIP_KEY_INFO: &[u8] = b"dnd gossip xchacha20poly1305 v1";
const PEER_KEY_INFO: &[u8] = b"dnd peer noise psk v1";
const FINGERPRINT_LABEL: &[u8] = b"dnd key fingerprint v1";

/// 32 secret bytes shared by every member. Its `Debug` shows only the
/// fingerprint.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey([u8; KEY_BYTES]);

#[derive(Debug, Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("a cluster key is base64 of 32 bytes (make one with `dnd keygen`)")]
    Malformed,
}

impl ClusterKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Self {
        use chacha20poly1305::aead::rand_core::RngCore;
        let mut bytes = [0; KEY_BYTES];
        OsRng.fill_bytes(&mut bytes);
        ClusterKey(bytes)
    }

    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| KeyError::Malformed)?;
        let bytes: [u8; KEY_BYTES] = bytes.try_into().map_err(|_| KeyError::Malformed)?;
        Ok(ClusterKey(bytes))
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// A short public name for the key: 16 hex digits of a labelled
    /// SHA-256, safe to log and to list.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::new()
            .chain_update(FINGERPRINT_LABEL)
            .chain_update(self.0)
            .finalize();
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    fn derive(&self, info: &[u8]) -> [u8; KEY_BYTES] {
        let mut out = [0; KEY_BYTES];
        // HKDF-SHA256 can expand to 8,160 bytes; 32 always fits.
        let expanded = hkdf::Hkdf::<Sha256>::new(None, &self.0).expand(info, &mut out);
        debug_assert!(expanded.is_ok());
        out
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterKey({})", self.fingerprint())
    }
}

/// One key and what is derived from it, computed once.
struct Entry {
    key: ClusterKey,
    fingerprint: String,
    gossip: XChaCha20Poly1305,
    peer_psk: [u8; KEY_BYTES],
}

impl Entry {
    fn new(key: ClusterKey) -> Self {
        let gossip = XChaCha20Poly1305::new(&key.derive(GOSSIP_KEY_INFO).into());
        Entry {
            fingerprint: key.fingerprint(),
            peer_psk: key.derive(PEER_KEY_INFO),
            gossip,
            key,
        }
    }
}

/// A change to the keyring, as `dnd keyring` sends it to every member.
/// `key` is the key in base64, or (to use or remove one) its fingerprint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyringChange {
    pub op: KeyringOp,
    pub key: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyringOp {
    Install,
    Use,
    Remove,
}

/// What a keyring holds, by fingerprint; the primary is also in `keys`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyringView {
    pub primary: String,
    pub keys: Vec<String>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum KeyringError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("no key {0} in the keyring")]
    Unknown(String),
    #[error("key {0} is the primary key; make another key primary first")]
    RemovePrimary(String),
    #[error("the keyring holds {MAX_KEYS} keys already; remove one first")]
    Full,
    #[error("cannot save the keyring: {0}")]
    Save(String),
}

/// The keys of this node, shared by the gossip codec, the peer channel and
/// the admin API. Cheap to clone; clones share one keyring.
#[derive(Clone)]
pub struct Keyring {
    /// The primary first. Replaced whole on a change, so a reader holds a
    /// consistent set while it tries them.
    keys: Arc<RwLock<Arc<Vec<Arc<Entry>>>>>,
    file: Option<PathBuf>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("keys", &self.view().keys)
            .finish()
    }
}

impl Keyring {
    /// A keyring of one key, kept in memory only.
    pub fn new(primary: ClusterKey) -> Self {
        Keyring {
            keys: Arc::new(RwLock::new(Arc::new(vec![Arc::new(Entry::new(primary))]))),
            file: None,
        }
    }

    /// The keyring kept in `data_dir`, or a new one holding `given` if there
    /// is none yet. A kept keyring wins over `given`, since it records a
    /// rotation made after the node was first configured; a `given` key
    /// that it does not hold is reported, not added (it may be the key a
    /// rotation removed).
    pub fn open(data_dir: &Path, given: ClusterKey) -> io::Result<Self> {
        let file = data_dir.join(KEYRING_FILE);
        let keys = match std::fs::read_to_string(&file) {
            Ok(text) => {
                let keys: Vec<ClusterKey> = text
                    .lines()
                    .filter(|line| !line.trim().is_empty())
                    .map(ClusterKey::from_base64)
                    .collect::<Result<_, _>>()
                    .map_err(|e| {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("{}: {e}", file.display()),
                        )
                    })?;
                if keys.is_empty() || keys.len() > MAX_KEYS {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{}: holds {} keys (1 to {MAX_KEYS})",
                            file.display(),
                            keys.len()
                        ),
                    ));
                }
                if !keys.contains(&given) {
                    tracing::warn!(
                        given = %given.fingerprint(),
                        primary = %keys[0].fingerprint(),
                        file = %file.display(),
                        "the configured cluster secret is not in the kept keyring (rotated since?); using the keyring"
                    );
                }
                keys
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => vec![given],
            Err(e) => return Err(e),
        };
        let keyring = Keyring {
            keys: Arc::new(RwLock::new(Arc::new(
                keys.into_iter().map(|k| Arc::new(Entry::new(k))).collect(),
            ))),
            file: Some(file),
        };
        keyring.save().map_err(io::Error::other)?;
        Ok(keyring)
    }

    fn entries(&self) -> Arc<Vec<Arc<Entry>>> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Seals `plaintext` under the primary key with a fresh random nonce:
    /// nonce, then ciphertext and tag.
    pub fn seal_gossip(&self, associated_data: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let entries = self.entries();
        let primary = &entries[0];
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let payload = Payload {
            msg: plaintext,
            aad: associated_data,
        };
        // Encryption fails only for messages past 256 GiB.
        let sealed = primary.gossip.encrypt(&nonce, payload).unwrap_or_default();
        let mut out = Vec::with_capacity(nonce.len() + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens what [`Keyring::seal_gossip`] made under any key of the ring.
    pub fn open_gossip(&self, associated_data: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < GOSSIP_SEAL_OVERHEAD {
            return None;
        }
        let (nonce, ciphertext) = sealed.split_at(24);
        let nonce = chacha20poly1305::XNonce::from_slice(nonce);
        self.entries().iter().find_map(|entry| {
            entry
                .gossip
                .decrypt(
                    nonce,
                    Payload {
                        msg: ciphertext,
                        aad: associated_data,
                    },
                )
                .ok()
        })
    }

    /// The peer channel's pre-shared keys, the primary's first.
    pub fn peer_psks(&self) -> Vec<[u8; KEY_BYTES]> {
        self.entries().iter().map(|e| e.peer_psk).collect()
    }

    pub fn view(&self) -> KeyringView {
        let entries = self.entries();
        KeyringView {
            primary: entries[0].fingerprint.clone(),
            keys: entries.iter().map(|e| e.fingerprint.clone()).collect(),
        }
    }

    /// Applies one change and saves the keyring; a refused change changes
    /// nothing.
    pub fn apply(&self, change: &KeyringChange) -> Result<KeyringView, KeyringError> {
        {
            let mut guard = self.keys.write().unwrap_or_else(PoisonError::into_inner);
            let mut keys: Vec<Arc<Entry>> = guard.as_ref().clone();
            match change.op {
                KeyringOp::Install => {
                    let key = ClusterKey::from_base64(&change.key)?;
                    if !keys.iter().any(|e| e.key == key) {
                        if keys.len() >= MAX_KEYS {
                            return Err(KeyringError::Full);
                        }
                        keys.push(Arc::new(Entry::new(key)));
                    }
                }
                KeyringOp::Use => {
                    let at = find(&keys, &change.key)?;
                    let entry = keys.remove(at);
                    keys.insert(0, entry);
                }
                KeyringOp::Remove => {
                    let at = find(&keys, &change.key)?;
                    if at == 0 {
                        return Err(KeyringError::RemovePrimary(keys[0].fingerprint.clone()));
                    }
                    keys.remove(at);
                }
            }
            *guard = Arc::new(keys);
        }
        self.save()?;
        Ok(self.view())
    }

    /// Writes the keys, primary first, to a file only the owner may read,
    /// replacing the old one in one rename.
    fn save(&self) -> Result<(), KeyringError> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let save_error = |e: io::Error| KeyringError::Save(format!("{}: {e}", file.display()));
        let text: String = self
            .entries()
            .iter()
            .map(|e| e.key.to_base64() + "\n")
            .collect();
        let temporary = file.with_extension("new");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut out = options.open(&temporary).map_err(save_error)?;
        out.write_all(text.as_bytes()).map_err(save_error)?;
        out.sync_all().map_err(save_error)?;
        std::fs::rename(&temporary, file).map_err(save_error)
    }
}

/// The position of the key `named` (base64 or fingerprint).
fn find(keys: &[Arc<Entry>], named: &str) -> Result<usize, KeyringError> {
    let named = named.trim();
    let by_key = ClusterKey::from_base64(named).ok();
    keys.iter()
        .position(|e| e.fingerprint == named || by_key.as_ref() == Some(&e.key))
        .ok_or_else(|| KeyringError::Unknown(named.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(op: KeyringOp, key: &ClusterKey) -> KeyringChange {
        KeyringChange {
            op,
            key: key.to_base64(),
        }
    }

    #[test]
    fn a_key_round_trips_through_base64_and_bad_text_is_refused() {
        let key = ClusterKey::generate();
        assert_eq!(ClusterKey::from_base64(&key.to_base64()), Ok(key.clone()));
        assert_eq!(ClusterKey::from_base64("  \n"), Err(KeyError::Malformed));
        assert_eq!(
            ClusterKey::from_base64("c2hvcnQ="),
            Err(KeyError::Malformed)
        );
        assert!(!format!("{key:?}").contains(&key.to_base64()));
    }

    #[test]
    fn sealed_gossip_opens_only_under_a_key_of_the_ring_and_the_same_associated_data() {
        let ring = Keyring::new(ClusterKey::generate());
        let sealed = ring.seal_gossip(b"ad", b"hello");
        assert_eq!(sealed.len(), 5 + GOSSIP_SEAL_OVERHEAD);
        assert_eq!(
            ring.open_gossip(b"ad", &sealed).as_deref(),
            Some(&b"hello"[..])
        );
        assert_eq!(ring.open_gossip(b"other", &sealed), None);
        let stranger = Keyring::new(ClusterKey::generate());
        assert_eq!(stranger.open_gossip(b"ad", &sealed), None);
        for at in 0..sealed.len() {
            let mut flipped = sealed.clone();
            flipped[at] ^= 0x01;
            assert_eq!(
                ring.open_gossip(b"ad", &flipped),
                None,
                "bit flipped at {at}"
            );
        }
        // Two seals of one message differ: the nonce is fresh each time.
        assert_ne!(ring.seal_gossip(b"ad", b"hello"), sealed);
    }

    #[test]
    fn a_rotation_accepts_both_keys_until_the_old_one_is_removed() {
        let (old, new) = (ClusterKey::generate(), ClusterKey::generate());
        let ring = Keyring::new(old.clone());
        let sealed_old = ring.seal_gossip(b"", b"x");
        ring.apply(&change(KeyringOp::Install, &new)).unwrap();
        assert_eq!(ring.view().primary, old.fingerprint());
        let peer = Keyring::new(new.clone());
        assert!(ring
            .open_gossip(b"", &peer.seal_gossip(b"", b"y"))
            .is_some());
        ring.apply(&KeyringChange {
            op: KeyringOp::Use,
            key: new.fingerprint(),
        })
        .unwrap();
        assert!(peer
            .open_gossip(b"", &ring.seal_gossip(b"", b"z"))
            .is_some());
        assert!(ring.open_gossip(b"", &sealed_old).is_some());
        assert_eq!(
            ring.apply(&change(KeyringOp::Remove, &new)),
            Err(KeyringError::RemovePrimary(new.fingerprint()))
        );
        let view = ring.apply(&change(KeyringOp::Remove, &old)).unwrap();
        assert_eq!(view.keys, vec![new.fingerprint()]);
        assert!(ring.open_gossip(b"", &sealed_old).is_none());
        assert_eq!(
            ring.apply(&change(KeyringOp::Use, &old)),
            Err(KeyringError::Unknown(old.to_base64()))
        );
    }

    #[test]
    fn the_keyring_is_bounded_and_installing_a_held_key_changes_nothing() {
        let ring = Keyring::new(ClusterKey::generate());
        let first = ring.view();
        ring.apply(&KeyringChange {
            op: KeyringOp::Install,
            key: "not a key".into(),
        })
        .unwrap_err();
        assert_eq!(ring.view(), first);
        for _ in 1..MAX_KEYS {
            ring.apply(&change(KeyringOp::Install, &ClusterKey::generate()))
                .unwrap();
        }
        assert_eq!(
            ring.apply(&change(KeyringOp::Install, &ClusterKey::generate())),
            Err(KeyringError::Full)
        );
        let held = ClusterKey::from_base64(&ring.entries()[1].key.to_base64()).unwrap();
        assert_eq!(
            ring.apply(&change(KeyringOp::Install, &held))
                .unwrap()
                .keys
                .len(),
            MAX_KEYS
        );
    }

    #[test]
    fn a_kept_keyring_survives_a_restart_and_wins_over_the_configured_key() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (ClusterKey::generate(), ClusterKey::generate());
        let ring = Keyring::open(dir.path(), old.clone()).unwrap();
        ring.apply(&change(KeyringOp::Install, &new)).unwrap();
        ring.apply(&change(KeyringOp::Use, &new)).unwrap();
        ring.apply(&change(KeyringOp::Remove, &old)).unwrap();
        let reopened = Keyring::open(dir.path(), old).unwrap();
        assert_eq!(reopened.view().keys, vec![new.fingerprint()]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEYRING_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "the keyring file is readable by others");
        }
    }
}
