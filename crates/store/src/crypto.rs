//! PHI at rest: the keys (from the environment only) and the two primitives every PHI column
//! goes through — an authenticated cipher for values we must read back, and a keyed hash for
//! values we only compare.
//!
//! A sealed value is `version (1) | key id length (1) | key id | nonce (24) | ciphertext + tag
//! (16)`, sealed with XChaCha20-Poly1305 (random 192-bit nonces: no per-key message bound to
//! manage). The key id in the header says which key opens it, so keys rotate: the first key of
//! `INTAKE_ENCRYPTION_KEYS` seals, every listed key opens. The associated data binds the header
//! and the value's place — its column and its row's key — so a ciphertext copied to another row
//! or column does not open. Nothing here ever formats key material or plaintext.

use std::sync::Arc;

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

/// Variable holding the encryption keys: `id:base64key[,id:base64key…]`, the first one current.
pub const ENCRYPTION_KEYS_VAR: &str = "INTAKE_ENCRYPTION_KEYS";
/// Variable holding the key of the keyed hashes (base64, at least 32 bytes).
pub const HMAC_KEY_VAR: &str = "INTAKE_HMAC_KEY";

/// Format version of a sealed value.
pub const SEALED_V1: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const KEY_LEN: usize = 32;
const MAX_KEY_ID_LEN: usize = 32;
const MIN_HMAC_KEY_LEN: usize = 32;

/// Why the keys cannot be used. Names the variable, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The variable is unset or empty.
    #[error(
        "{variable} is not set: PHI is stored encrypted and this process needs the keys (see README, PHI at rest)"
    )]
    Missing {
        /// The variable.
        variable: &'static str,
    },
    /// The variable is set but unusable.
    #[error("{variable} is invalid: {reason}")]
    Invalid {
        /// The variable.
        variable: &'static str,
        /// What is wrong, without the value.
        reason: String,
    },
}

impl KeyError {
    /// The variable at fault.
    pub fn variable(&self) -> &'static str {
        match self {
            KeyError::Missing { variable } | KeyError::Invalid { variable, .. } => variable,
        }
    }
}

/// Why a sealed value could not be opened. Never carries the value or a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// Too short, or its header is inconsistent (e.g. plaintext where a sealed value belongs).
    #[error("sealed value is malformed (not written by this cipher)")]
    Malformed,
    /// A format this build does not read.
    #[error("sealed value of format {0}; this build reads format {SEALED_V1}")]
    Format(u8),
    /// Sealed under a key id the configured keys do not hold.
    #[error("sealed value is under key id {0:?}, which {ENCRYPTION_KEYS_VAR} does not list")]
    UnknownKey(String),
    /// The key is known but the value does not authenticate: the wrong key material under that
    /// id, a tampered value, or a value moved from another row or column.
    #[error(
        "sealed value does not authenticate (wrong key for its id, tampered, or moved from another row or column)"
    )]
    Forged,
    /// It opened, but does not hold the type the column holds.
    #[error("sealed value holds no valid {0}")]
    NotA(&'static str),
}

/// Where a sealed value belongs: a label naming its column (e.g. `contact_phi.mbi`) and its
/// row's key. Both are authenticated with the value.
#[derive(Debug, Clone, Copy)]
pub struct Place<'a> {
    /// Column label.
    pub column: &'a str,
    /// The row's key, part by part (as text).
    pub row: &'a [&'a str],
}

impl<'a> Place<'a> {
    /// The value of `column` in the row keyed by `row`.
    pub const fn new(column: &'a str, row: &'a [&'a str]) -> Place<'a> {
        Place { column, row }
    }

    /// Length-prefixed parts: no two places encode alike.
    fn encode(&self, out: &mut Vec<u8>) {
        for part in std::iter::once(self.column).chain(self.row.iter().copied()) {
            out.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
            out.extend_from_slice(part.as_bytes());
        }
    }
}

struct DataKey {
    id: String,
    cipher: XChaCha20Poly1305,
}

struct Inner {
    /// The first is current (seals); all open.
    keys: Vec<DataKey>,
    hmac: Hmac<Sha256>,
}

/// The encryption keys and the hash key. Cheap to clone; `Debug` shows key ids only.
#[derive(Clone)]
pub struct Keyring {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("key_ids", &self.key_ids())
            .finish_non_exhaustive()
    }
}

fn invalid(variable: &'static str, reason: impl Into<String>) -> KeyError {
    KeyError::Invalid {
        variable,
        reason: reason.into(),
    }
}

fn decode_key(variable: &'static str, what: &str, text: &str) -> Result<Vec<u8>, KeyError> {
    let text = text.trim();
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(text))
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text))
        .map_err(|_| invalid(variable, format!("{what} is not base64")))
}

impl Keyring {
    /// Parses `encryption_keys` (`id:base64key[,id:base64key…]`, each key 32 bytes, the first
    /// current) and `hmac_key` (base64, at least 32 bytes, not one of the encryption keys).
    pub fn new(encryption_keys: &str, hmac_key: &str) -> Result<Keyring, KeyError> {
        let var = ENCRYPTION_KEYS_VAR;
        let mut keys: Vec<DataKey> = Vec::new();
        let mut raw_keys: Vec<Vec<u8>> = Vec::new();
        for (n, entry) in encryption_keys.split(',').enumerate() {
            let entry = entry.trim();
            let position = n + 1;
            let Some((id, key)) = entry.split_once(':') else {
                return Err(invalid(var, format!("entry {position} is not id:base64key")));
            };
            let id = id.trim();
            if id.is_empty()
                || id.len() > MAX_KEY_ID_LEN
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            {
                return Err(invalid(
                    var,
                    format!(
                        "entry {position}: a key id is 1 to {MAX_KEY_ID_LEN} characters of A-Z a-z 0-9 . _ -"
                    ),
                ));
            }
            if keys.iter().any(|k| k.id == id) {
                return Err(invalid(var, format!("key id {id:?} is listed twice")));
            }
            let bytes = decode_key(var, &format!("the key of {id:?}"), key)?;
            if bytes.len() != KEY_LEN {
                return Err(invalid(
                    var,
                    format!("the key of {id:?} is {} bytes; it must be {KEY_LEN}", bytes.len()),
                ));
            }
            let cipher = XChaCha20Poly1305::new_from_slice(&bytes)
                .map_err(|_| invalid(var, format!("the key of {id:?} is unusable")))?;
            raw_keys.push(bytes);
            keys.push(DataKey {
                id: id.to_owned(),
                cipher,
            });
        }
        let hmac_bytes = decode_key(HMAC_KEY_VAR, "the key", hmac_key)?;
        if hmac_bytes.len() < MIN_HMAC_KEY_LEN {
            return Err(invalid(
                HMAC_KEY_VAR,
                format!(
                    "the key is {} bytes; it must be at least {MIN_HMAC_KEY_LEN}",
                    hmac_bytes.len()
                ),
            ));
        }
        if raw_keys.contains(&hmac_bytes) {
            return Err(invalid(
                HMAC_KEY_VAR,
                format!("it must be a key of its own, not one of {ENCRYPTION_KEYS_VAR}"),
            ));
        }
        let hmac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(&hmac_bytes)
            .map_err(|_| invalid(HMAC_KEY_VAR, "the key is unusable"))?;
        Ok(Keyring {
            inner: Arc::new(Inner { keys, hmac }),
        })
    }

    /// The id of the key that seals.
    pub fn current_key_id(&self) -> &str {
        // `new` refuses an empty list: `split` yields at least one entry, and each must parse.
        &self.inner.keys[0].id
    }

    /// Every key id, current first.
    pub fn key_ids(&self) -> Vec<&str> {
        self.inner.keys.iter().map(|k| k.id.as_str()).collect()
    }

    /// The header every value sealed under the current key starts with (what rotation compares
    /// stored values against).
    pub fn current_header(&self) -> Vec<u8> {
        header(self.current_key_id())
    }

    /// Seals `plaintext` for `place` under the current key.
    pub fn seal(&self, plaintext: &[u8], place: &Place<'_>) -> Vec<u8> {
        let key = &self.inner.keys[0];
        let mut out = header(&key.id);
        // A random 192-bit nonce from the thread's CSPRNG (ChaCha, seeded and reseeded from the
        // OS): as safe as asking the OS each time, without a system call per sealed value.
        let mut nonce = XNonce::default();
        rand::Rng::fill(&mut rand::rng(), nonce.as_mut_slice());
        let aad = associated_data(&out, place);
        // Encryption of an in-memory buffer with a valid key and nonce cannot fail (the only
        // error is a message longer than the cipher's 256 GiB bound).
        let sealed = key
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .unwrap_or_default();
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens a value sealed for `place` under any configured key.
    pub fn open(&self, sealed: &[u8], place: &Place<'_>) -> Result<Vec<u8>, CryptoError> {
        let id = key_id_of(sealed)?;
        let key = self
            .inner
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| CryptoError::UnknownKey(id.to_owned()))?;
        let header_len = 2 + id.len();
        let (head, rest) = sealed.split_at(header_len);
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let aad = associated_data(head, place);
        key.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| CryptoError::Forged)
    }

    /// Whether `sealed` is under the current key (rotation leaves it alone).
    pub fn is_current(&self, sealed: &[u8]) -> bool {
        key_id_of(sealed).is_ok_and(|id| id == self.current_key_id())
    }

    /// HMAC-SHA256 under the hash key of `value`, domain-separated by `purpose` (so a hash made
    /// for one column never matches one made for another).
    pub fn keyed_hash(&self, purpose: &str, value: &[u8]) -> [u8; 32] {
        let mut mac = self.inner.hmac.clone();
        mac.update(&u32::try_from(purpose.len()).unwrap_or(u32::MAX).to_be_bytes());
        mac.update(purpose.as_bytes());
        mac.update(value);
        mac.finalize().into_bytes().into()
    }

    /// [`Keyring::keyed_hash`] as lowercase hex.
    pub fn keyed_hash_hex(&self, purpose: &str, value: &[u8]) -> String {
        hex_lower(&self.keyed_hash(purpose, value))
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn header(key_id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + key_id.len() + NONCE_LEN + TAG_LEN + 64);
    out.push(SEALED_V1);
    // Key ids are at most 32 bytes (checked when parsed).
    out.push(u8::try_from(key_id.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(key_id.as_bytes());
    out
}

fn associated_data(header: &[u8], place: &Place<'_>) -> Vec<u8> {
    let mut aad = header.to_vec();
    place.encode(&mut aad);
    aad
}

/// The key id a sealed value names, after checking its header and length.
pub fn key_id_of(sealed: &[u8]) -> Result<&str, CryptoError> {
    let (&version, rest) = sealed.split_first().ok_or(CryptoError::Malformed)?;
    if version != SEALED_V1 {
        return Err(if sealed.len() >= 2 + NONCE_LEN + TAG_LEN {
            CryptoError::Format(version)
        } else {
            CryptoError::Malformed
        });
    }
    let (&len, rest) = rest.split_first().ok_or(CryptoError::Malformed)?;
    let len = usize::from(len);
    if len == 0 || len > MAX_KEY_ID_LEN || rest.len() < len + NONCE_LEN + TAG_LEN {
        return Err(CryptoError::Malformed);
    }
    std::str::from_utf8(&rest[..len]).map_err(|_| CryptoError::Malformed)
}

/// The key settings as read from the environment: secrets, parsed into a [`Keyring`] when a
/// process starts (which names the variable at fault). `Debug` shows only whether each is set.
#[derive(Clone, Default)]
pub struct KeySettings {
    /// `INTAKE_ENCRYPTION_KEYS`.
    pub encryption_keys: Option<SecretString>,
    /// `INTAKE_HMAC_KEY`.
    pub hmac_key: Option<SecretString>,
}

impl std::fmt::Debug for KeySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |v: &Option<SecretString>| if v.is_some() { "<set>" } else { "<unset>" };
        f.debug_struct("KeySettings")
            .field("encryption_keys", &set(&self.encryption_keys))
            .field("hmac_key", &set(&self.hmac_key))
            .finish()
    }
}

impl KeySettings {
    /// `INTAKE_ENCRYPTION_KEYS` and `INTAKE_HMAC_KEY` (unset or empty: absent).
    pub fn from_env() -> KeySettings {
        let read = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .map(SecretString::from)
        };
        KeySettings {
            encryption_keys: read(ENCRYPTION_KEYS_VAR),
            hmac_key: read(HMAC_KEY_VAR),
        }
    }

    /// Settings holding these values (tests, tools).
    pub fn new(encryption_keys: &str, hmac_key: &str) -> KeySettings {
        KeySettings {
            encryption_keys: Some(encryption_keys.into()),
            hmac_key: Some(hmac_key.into()),
        }
    }

    /// The keyring; an error names the variable that is missing or wrong.
    pub fn keyring(&self) -> Result<Keyring, KeyError> {
        let keys = self.encryption_keys.as_ref().ok_or(KeyError::Missing {
            variable: ENCRYPTION_KEYS_VAR,
        })?;
        let hmac = self.hmac_key.as_ref().ok_or(KeyError::Missing {
            variable: HMAC_KEY_VAR,
        })?;
        Keyring::new(keys.expose_secret(), hmac.expose_secret())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const K2: &str = "k2:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
    const HMAC: &str = "QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8=";
    const ROW: Place<'static> = Place::new("contact_phi.mbi", &["1234"]);

    fn ring(keys: &str) -> Keyring {
        Keyring::new(keys, HMAC).expect("keys")
    }

    #[test]
    fn seals_and_opens_under_the_current_key() {
        let keys = ring(&format!("{K2},{K1}"));
        assert_eq!(keys.current_key_id(), "k2");
        let sealed = keys.seal(b"T0NY-S0PR4N0", &ROW);
        assert_eq!(key_id_of(&sealed), Ok("k2"));
        assert!(keys.is_current(&sealed));
        assert!(sealed.starts_with(&keys.current_header()));
        assert!(!sealed.windows(12).any(|w| w == b"T0NY-S0PR4N0"));
        assert_eq!(keys.open(&sealed, &ROW).expect("open"), b"T0NY-S0PR4N0");
        // Random nonces: the same value seals differently every time.
        assert_ne!(keys.seal(b"T0NY-S0PR4N0", &ROW), sealed);
        assert_eq!(keys.open(&keys.seal(b"", &ROW), &ROW).expect("empty"), b"");
    }

    #[test]
    fn a_value_moved_to_another_row_or_column_does_not_open() {
        let keys = ring(K1);
        let sealed = keys.seal(b"1959-08-22", &ROW);
        let other_row = Place::new("contact_phi.mbi", &["1235"]);
        let other_column = Place::new("contact_phi.dob", &["1234"]);
        // Parts are length-prefixed: ("12", "34") is not ("1234").
        let split_row = Place::new("contact_phi.mbi", &["12", "34"]);
        for place in [other_row, other_column, split_row] {
            assert_eq!(keys.open(&sealed, &place), Err(CryptoError::Forged));
        }
        let mut tampered = sealed.clone();
        *tampered.last_mut().expect("byte") ^= 1;
        assert_eq!(keys.open(&tampered, &ROW), Err(CryptoError::Forged));
    }

    #[test]
    fn old_keys_open_until_removed_and_wrong_keys_fail_clearly() {
        let old = ring(K1);
        let sealed = old.seal(b"secret", &ROW);
        let rotated = ring(&format!("{K2},{K1}"));
        assert!(!rotated.is_current(&sealed));
        assert_eq!(rotated.open(&sealed, &ROW).expect("old key opens"), b"secret");
        let without_k1 = ring(K2);
        assert_eq!(
            without_k1.open(&sealed, &ROW),
            Err(CryptoError::UnknownKey("k1".into()))
        );
        // Other key material under the same id: does not authenticate.
        let impostor = ring("k1:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=");
        let err = impostor.open(&sealed, &ROW).unwrap_err();
        assert_eq!(err, CryptoError::Forged);
        // Plaintext where a sealed value belongs.
        assert_eq!(
            rotated.open(b"{\"dob\":\"1959-08-22\"}", &ROW),
            Err(CryptoError::Malformed)
        );
        assert_eq!(rotated.open(b"", &ROW), Err(CryptoError::Malformed));
        for e in [err, CryptoError::UnknownKey("k1".into()), CryptoError::Malformed] {
            assert!(!e.to_string().contains("secret"));
        }
    }

    #[test]
    fn key_errors_name_the_variable_never_the_value() {
        let secret = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd";
        let cases = [
            (format!("k1:{secret}"), HMAC, ENCRYPTION_KEYS_VAR), // 30 bytes
            (format!("k1{secret}"), HMAC, ENCRYPTION_KEYS_VAR),  // no id
            (format!("{K1},{K1}"), HMAC, ENCRYPTION_KEYS_VAR),   // duplicate id
            (format!("k 1:{secret}"), HMAC, ENCRYPTION_KEYS_VAR),
            ("k1:not base64!".to_owned(), HMAC, ENCRYPTION_KEYS_VAR),
            (K1.to_owned(), "c2hvcnQ=", HMAC_KEY_VAR),
            (K1.to_owned(), &K1[3..], HMAC_KEY_VAR), // the encryption key again
        ];
        for (keys, hmac, variable) in cases {
            let e = Keyring::new(&keys, hmac).unwrap_err();
            let KeyError::Invalid { variable: v, .. } = &e else {
                panic!("{e}")
            };
            assert_eq!(*v, variable, "{e}");
            let text = e.to_string();
            assert!(
                !text.contains(secret) && !text.contains(&K1[3..]) && !text.contains(hmac),
                "{text}"
            );
        }
        let e = KeySettings::default().keyring().unwrap_err();
        assert_eq!(
            e,
            KeyError::Missing {
                variable: ENCRYPTION_KEYS_VAR
            }
        );
        let e = KeySettings {
            encryption_keys: Some(K1.into()),
            hmac_key: None,
        }
        .keyring()
        .unwrap_err();
        assert_eq!(
            e,
            KeyError::Missing {
                variable: HMAC_KEY_VAR
            }
        );
        let settings = KeySettings::new(K1, HMAC);
        let debug = format!("{settings:?} {:?}", settings.keyring().expect("valid"));
        assert!(!debug.contains(&K1[3..]) && !debug.contains(HMAC), "{debug}");
    }

    #[test]
    fn keyed_hashes_depend_on_key_and_purpose() {
        let a = ring(K1);
        let b = Keyring::new(K1, "YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY=").expect("keys");
        assert_eq!(a.keyed_hash("body", b"x"), a.keyed_hash("body", b"x"));
        assert_ne!(a.keyed_hash("body", b"x"), b.keyed_hash("body", b"x"));
        assert_ne!(a.keyed_hash("body", b"x"), a.keyed_hash("mbi", b"x"));
        assert_eq!(a.keyed_hash_hex("body", b"x").len(), 64);
    }
}
