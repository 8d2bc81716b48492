//! Publisher keys: ed25519, stored as PKCS#8 / SPKI PEM files that OpenSSL and
//! other tools read, and written in manifests and policies as `ed25519:<hex>`.
//! Keys people already have are accepted too: an OpenSSH ed25519 private key
//! (`ssh-keygen -t ed25519`, passphrase-protected or not) signs, and an
//! OpenSSH public key line (`ssh-ed25519 AAAA... comment`) names a trusted
//! publisher. Other OpenSSH key types are refused by name: packages are
//! signed with ed25519 only.

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
    #[error("{path} is not an ed25519 private key in PKCS#8 PEM or OpenSSH format ({reason})")]
    NotPrivateKey { path: String, reason: String },
    #[error("{path} is not an ed25519 public key in SPKI PEM or OpenSSH format ({reason})")]
    NotPublicKey { path: String, reason: String },
    #[error(
        "invalid publisher key {text:?}: {reason} (expected \"ed25519:\" and 64 hex digits, or an OpenSSH \"ssh-ed25519 AAAA...\" line)"
    )]
    BadText { text: String, reason: String },
    #[error("{path} is passphrase-protected: {reason}")]
    Passphrase { path: String, reason: String },
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

    /// Reads a public key file: SPKI PEM (`-----BEGIN PUBLIC KEY-----`) or
    /// an OpenSSH public key line (`ssh-ed25519 AAAA... comment`, as in
    /// `id_ed25519.pub`).
    pub fn read_file(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let not_public = |reason: String| KeyError::NotPublicKey {
            path: path.display().to_string(),
            reason,
        };
        let bytes = if text.trim_start().starts_with("-----BEGIN") {
            VerifyingKey::from_public_key_pem(&text)
                .map_err(|e| not_public(e.to_string()))?
                .to_bytes()
        } else {
            openssh_public(&text).map_err(not_public)?
        };
        Self::from_bytes(&bytes).map_err(|e| not_public(e.to_string()))
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
        let text = text.trim();
        let bytes = if let Some(hex_part) = text.strip_prefix("ed25519:") {
            let mut bytes = [0u8; 32];
            hex::decode_to_slice(hex_part, &mut bytes).map_err(|e| bad(&e.to_string()))?;
            bytes
        } else if text.starts_with("ssh-") || text.starts_with("ecdsa-") {
            openssh_public(text).map_err(|reason| bad(&reason))?
        } else {
            return Err(bad("neither \"ed25519:\" nor an OpenSSH key"));
        };
        Self::from_bytes(&bytes).map_err(|e| bad(&e.to_string()))
    }
}

/// The key bytes of an OpenSSH ed25519 public key line; other key types
/// are refused by name.
fn openssh_public(line: &str) -> Result<[u8; 32], String> {
    let key = ssh_key::PublicKey::from_openssh(line.trim()).map_err(|e| e.to_string())?;
    match key.key_data().ed25519() {
        Some(ed25519) => Ok(ed25519.0),
        None => Err(format!(
            "an OpenSSH {} key; packages are signed with ed25519 only",
            key.algorithm()
        )),
    }
}

/// A publisher's signing key.
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Self {
        Self(SigningKey::generate(&mut rand::rngs::OsRng))
    }

    /// The key made from a fixed 32-byte seed (the same seed always gives
    /// the same key: for reproducible fixtures, never for real secrets).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(seed))
    }

    /// The matching public key.
    pub fn public(&self) -> PublisherKey {
        PublisherKey(self.0.verifying_key())
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }

    /// Reads a private key file: PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`)
    /// or OpenSSH (`-----BEGIN OPENSSH PRIVATE KEY-----`, ed25519). For a
    /// passphrase-protected OpenSSH key `passphrase` is asked for the
    /// passphrase, once; it is never called otherwise.
    pub fn read_file(
        path: &Path,
        passphrase: impl FnOnce() -> Result<String, String>,
    ) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let not_private = |reason: String| KeyError::NotPrivateKey {
            path: path.display().to_string(),
            reason,
        };
        if !text.contains("-----BEGIN OPENSSH PRIVATE KEY-----") {
            return SigningKey::from_pkcs8_pem(&text)
                .map(Self)
                .map_err(|e| not_private(e.to_string()));
        }
        let mut key =
            ssh_key::PrivateKey::from_openssh(&text).map_err(|e| not_private(e.to_string()))?;
        if key.is_encrypted() {
            let locked = |reason: String| KeyError::Passphrase {
                path: path.display().to_string(),
                reason,
            };
            let passphrase = passphrase().map_err(locked)?;
            key = key
                .decrypt(passphrase.as_bytes())
                .map_err(|_| locked("the passphrase does not open it".into()))?;
        }
        let Some(pair) = key.key_data().ed25519() else {
            return Err(not_private(format!(
                "an OpenSSH {} key; packages are signed with ed25519 only",
                key.algorithm()
            )));
        };
        // The parser has checked that the public half matches the private.
        Ok(Self(SigningKey::from_bytes(&pair.private.to_bytes())))
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
pub(crate) mod tests {
    use super::*;

    /// The passphrase source of a key that must not need one.
    fn never() -> Result<String, String> {
        panic!("asked for a passphrase")
    }

    /// Makes a key with `ssh-keygen` in `dir`; returns the private key's
    /// path (the public key is next to it, `.pub`).
    pub(crate) fn ssh_keygen(dir: &Path, kind: &str, passphrase: &str) -> std::path::PathBuf {
        let path = dir.join(format!("id_{kind}"));
        let status = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", kind, "-N", passphrase, "-C", "alice@example"])
            .arg("-f")
            .arg(&path)
            .status()
            .expect("ssh-keygen runs");
        assert!(status.success());
        path
    }

    pub(crate) fn pub_line(path: &Path) -> String {
        let mut public = path.as_os_str().to_owned();
        public.push(".pub");
        std::fs::read_to_string(public).unwrap()
    }

    #[test]
    fn openssh_keys_from_ssh_keygen_sign_and_name_the_publisher() {
        let dir = tempfile::tempdir().unwrap();
        let path = ssh_keygen(dir.path(), "ed25519", "");
        let secret = SecretKey::read_file(&path, never).unwrap();
        let line = pub_line(&path);
        assert!(line.starts_with("ssh-ed25519 "));
        assert_eq!(line.parse::<PublisherKey>().unwrap(), secret.public());
        let mut public = path.as_os_str().to_owned();
        public.push(".pub");
        assert_eq!(
            PublisherKey::read_file(Path::new(&public)).unwrap(),
            secret.public()
        );
        let signature = secret.sign(b"package");
        assert!(secret.public().verify(b"package", &signature));
        // The same key written as `ed25519:<hex>` is the same publisher.
        assert_eq!(
            secret.public().to_string().parse::<PublisherKey>().unwrap(),
            secret.public()
        );
    }

    #[test]
    fn a_passphrase_protected_openssh_key_opens_only_with_its_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let path = ssh_keygen(dir.path(), "ed25519", "correct horse");
        let opened = SecretKey::read_file(&path, || Ok("correct horse".into())).unwrap();
        assert_eq!(
            opened.public(),
            pub_line(&path).parse::<PublisherKey>().unwrap()
        );
        match SecretKey::read_file(&path, || Ok("battery staple".into())) {
            Err(KeyError::Passphrase { reason, .. }) => {
                assert!(reason.contains("does not open"), "{reason}")
            }
            other => panic!("{:?}", other.map(|k| k.public())),
        }
        match SecretKey::read_file(&path, || Err("no terminal".into())) {
            Err(error @ KeyError::Passphrase { .. }) => {
                assert!(error.to_string().contains("no terminal"), "{error}")
            }
            other => panic!("{:?}", other.map(|k| k.public())),
        }
    }

    #[test]
    fn other_openssh_key_types_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = ssh_keygen(dir.path(), "ecdsa", "");
        match SecretKey::read_file(&path, never) {
            Err(error @ KeyError::NotPrivateKey { .. }) => {
                assert!(error.to_string().contains("ecdsa"), "{error}")
            }
            other => panic!("{:?}", other.map(|k| k.public())),
        }
        match pub_line(&path).parse::<PublisherKey>() {
            Err(error @ KeyError::BadText { .. }) => {
                assert!(error.to_string().contains("ecdsa"), "{error}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_openssh_key_whose_halves_disagree_is_refused() {
        use ssh_key::private::KeypairData;
        use ssh_key::public::Ed25519PublicKey;
        let dir = tempfile::tempdir().unwrap();
        let path = ssh_keygen(dir.path(), "ed25519", "");
        let original = ssh_key::PrivateKey::read_openssh_file(&path).unwrap();
        let mut pair = original.key_data().ed25519().unwrap().clone();
        pair.public = Ed25519PublicKey(SecretKey::generate().public().to_bytes());
        let forged = ssh_key::PrivateKey::new(KeypairData::Ed25519(pair), "forged").unwrap();
        let forged_path = dir.path().join("forged");
        forged
            .write_openssh_file(&forged_path, ssh_key::LineEnding::LF)
            .unwrap();
        match SecretKey::read_file(&forged_path, never) {
            Err(error @ KeyError::NotPrivateKey { .. }) => {
                assert!(error.to_string().contains("forged"), "{error}")
            }
            other => panic!("{:?}", other.map(|k| k.public())),
        }
    }

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
        assert!(bad(&hex::encode(key.to_bytes())).contains("neither"));
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
        let again = SecretKey::read_file(&path, never).unwrap();
        assert_eq!(again.public(), secret.public());
        assert_eq!(
            PublisherKey::read_file(&public_path).unwrap(),
            secret.public()
        );
        // Never overwrite an existing key.
        assert!(matches!(
            secret.write_pem_files(&path),
            Err(KeyError::Write { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists
        ));
        // A public key is not a private key.
        assert!(matches!(
            SecretKey::read_file(&public_path, never),
            Err(KeyError::NotPrivateKey { .. })
        ));
        let signature = secret.sign(b"message");
        assert!(secret.public().verify(b"message", &signature));
        assert!(!secret.public().verify(b"messagE", &signature));
    }
}
