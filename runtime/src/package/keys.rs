//! Publisher keys: ed25519, stored as PKCS#8 / SPKI PEM files that OpenSSL and
//! other tools read, and written in manifests and policies as `ed25519:<hex>`.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

/// Key file and key text errors.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write key file {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not an ed25519 private key in PKCS#8 PEM format ({reason})")]
    NotPrivateKey { path: String, reason: String },
    #[error("{path} is not an ed25519 public key in SPKI PEM format ({reason})")]
    NotPublicKey { path: String, reason: String },
    #[error("invalid publisher key {text:?}: {reason} (expected \"ed25519:\" and 64 hex digits)")]
    BadText { text: String, reason: String },
    #[error("not an ed25519 public key: {0}")]
    NotAPoint(ed25519_dalek::SignatureError),
    #[error("weak (small-order) public key")]
    Weak,
}

/// A publisher's public key: the identity that signs packages.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublisherKey(VerifyingKey);

impl PublisherKey {
    /// The raw 32 key bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// Parses the raw 32 key bytes (refusing weak / small-order points).
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        let key = VerifyingKey::from_bytes(bytes).map_err(KeyError::NotAPoint)?;
        if key.is_weak() {
            return Err(KeyError::Weak);
        }
        Ok(Self(key))
    }

    /// Verifies `signature` over `message` with strict (non-malleable) rules.
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        self.0
            .verify_strict(message, &Signature::from_bytes(signature))
            .is_ok()
    }

    /// Reads an SPKI PEM public key file (`-----BEGIN PUBLIC KEY-----`).
    pub fn read_pem_file(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let key = VerifyingKey::from_public_key_pem(&text).map_err(|e| KeyError::NotPublicKey {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::from_bytes(&key.to_bytes()).map_err(|e| KeyError::NotPublicKey {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    }

    /// The key as an SPKI PEM document.
    pub fn to_pem(&self) -> String {
        self.0
            .to_public_key_pem(LineEnding::LF)
            .expect("encoding an ed25519 public key cannot fail")
    }

    /// A short form for logs and tables: the first 8 bytes in hex.
    pub fn short(&self) -> String {
        hex::encode(&self.to_bytes()[..8])
    }
}

impl fmt::Display for PublisherKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ed25519:{}", hex::encode(self.to_bytes()))
    }
}

impl fmt::Debug for PublisherKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for PublisherKey {
    type Err = KeyError;

    fn from_str(text: &str) -> Result<Self, KeyError> {
        let bad = |reason: &str| KeyError::BadText {
            text: text.to_owned(),
            reason: reason.to_owned(),
        };
        let hex_part = text
            .trim()
            .strip_prefix("ed25519:")
            .ok_or_else(|| bad("missing \"ed25519:\" prefix"))?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut bytes).map_err(|e| bad(&e.to_string()))?;
        Self::from_bytes(&bytes).map_err(|e| bad(&e.to_string()))
    }
}

/// A publisher's signing key.
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Self {
        Self(SigningKey::generate(&mut rand::rngs::OsRng))
    }

    /// The matching public key.
    pub fn public(&self) -> PublisherKey {
        PublisherKey(self.0.verifying_key())
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }

    /// Reads a PKCS#8 PEM private key file (`-----BEGIN PRIVATE KEY-----`).
    pub fn read_pem_file(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        SigningKey::from_pkcs8_pem(&text)
            .map(Self)
            .map_err(|e| KeyError::NotPrivateKey {
                path: path.display().to_string(),
                reason: e.to_string(),
            })
    }

    /// Writes the key as PKCS#8 PEM (mode 0600, refusing to overwrite) and the
    /// public key next to it as `<path>.pub` in SPKI PEM.
    pub fn write_pem_files(&self, path: &Path) -> Result<std::path::PathBuf, KeyError> {
        let write_err = |path: &Path, source| KeyError::Write {
            path: path.display().to_string(),
            source,
        };
        let pem = self
            .0
            .to_pkcs8_pem(LineEnding::LF)
            .expect("encoding an ed25519 private key cannot fail");
        crate::files::write_new(path, pem.as_bytes(), 0o600).map_err(|e| write_err(path, e))?;
        let mut public_path = path.as_os_str().to_owned();
        public_path.push(".pub");
        let public_path = std::path::PathBuf::from(public_path);
        crate::files::write_new(&public_path, self.public().to_pem().as_bytes(), 0o644)
            .map_err(|e| write_err(&public_path, e))?;
        Ok(public_path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip_and_rejections() {
        let key = SecretKey::generate().public();
        let text = key.to_string();
        assert_eq!(text.parse::<PublisherKey>().unwrap(), key);
        let bad = |text: &str| match text.parse::<PublisherKey>() {
            Err(KeyError::BadText { reason, .. }) => reason,
            other => panic!("{text:?}: {other:?}"),
        };
        assert!(!bad("ed25519:zz").is_empty());
        assert!(bad(&hex::encode(key.to_bytes())).contains("prefix"));
        // The identity point is a small-order (weak) key.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(bad(&format!("ed25519:{}", hex::encode(identity))).contains("weak"));
        assert!(matches!(
            PublisherKey::from_bytes(&identity),
            Err(KeyError::Weak)
        ));
    }

    #[test]
    fn pem_files_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        let secret = SecretKey::generate();
        let public_path = secret.write_pem_files(&path).unwrap();
        let again = SecretKey::read_pem_file(&path).unwrap();
        assert_eq!(again.public(), secret.public());
        assert_eq!(
            PublisherKey::read_pem_file(&public_path).unwrap(),
            secret.public()
        );
        // Never overwrite an existing key.
        assert!(matches!(
            secret.write_pem_files(&path),
            Err(KeyError::Write { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists
        ));
        // A public key is not a private key.
        assert!(matches!(
            SecretKey::read_pem_file(&public_path),
            Err(KeyError::NotPrivateKey { .. })
        ));
        let signature = secret.sign(b"message");
        assert!(secret.public().verify(b"message", &signature));
        assert!(!secret.public().verify(b"messagE", &signature));
    }
}
