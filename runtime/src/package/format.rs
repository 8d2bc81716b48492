//! The package file: one file holding the signed advert and the component.
//!
//! Wire format (all integers little-endian):
//!
//! ```text
//! package := "SP2APKG1" advert_len:u32 advert component
//! advert  := "SP2AADV1" manifest_len:u32 manifest
//!            component_hash:[u8;32] component_len:u64
//!            publisher:[u8;32] signature:[u8;64]
//! ```
//!
//! * `manifest` is the canonical manifest XML (at most 64 KiB).
//! * `component_hash` is the BLAKE3 hash of the component bytes; it is also the
//!   root that verified streaming checks chunks against.
//! * `signature` is the publisher's ed25519 signature (strict verification)
//!   over `"sp2a-package-signature-v1\0" || manifest_len:u64 || manifest ||
//!   component_hash || component_len:u64`; `publisher` must equal the
//!   manifest's `<owner>`.
//! * The content id of a package is the BLAKE3 hash of its advert bytes. The
//!   advert commits to the component through its hash, so the advert alone is
//!   what peers fetch to decide whether to download.
//!
//! Limits: manifest [`MAX_MANIFEST_SIZE`], component [`MAX_COMPONENT_SIZE`];
//! the file must end exactly after the component.

use std::fmt;
use std::str::FromStr;

use super::keys::{PublisherKey, SecretKey};
use super::manifest::{Manifest, ManifestError};

pub use super::manifest::MAX_MANIFEST_SIZE;

/// Largest component accepted, in bytes.
pub const MAX_COMPONENT_SIZE: u64 = 256 << 20;

const PACKAGE_MAGIC: &[u8; 8] = b"SP2APKG1";
const ADVERT_MAGIC: &[u8; 8] = b"SP2AADV1";
const SIGNATURE_DOMAIN: &[u8] = b"sp2a-package-signature-v1\0";
/// Advert bytes besides the manifest.
const ADVERT_FIXED: usize = 8 + 4 + 32 + 8 + 32 + 64;
const MAX_ADVERT_SIZE: usize = ADVERT_FIXED + MAX_MANIFEST_SIZE;

/// A package that could not be read or verified.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("not an sp2a package (bad magic bytes)")]
    BadMagic,
    #[error("package is truncated: {0}")]
    Truncated(&'static str),
    #[error("package has {0} unexpected bytes after the component")]
    TrailingBytes(u64),
    #[error("advert is {0} bytes; the limit is {MAX_ADVERT_SIZE}")]
    AdvertTooLarge(usize),
    #[error("component is {0} bytes; the limit is {MAX_COMPONENT_SIZE}")]
    ComponentTooLarge(u64),
    #[error("invalid manifest: {0}")]
    Manifest(#[from] ManifestError),
    #[error("invalid publisher key in advert: {0}")]
    BadPublisher(super::keys::KeyError),
    #[error("manifest <owner> {owner} does not match the signing publisher {publisher}")]
    OwnerMismatch { owner: String, publisher: String },
    #[error("manifest has no <owner>")]
    NoOwner,
    #[error("signature does not verify: the advert was modified or signed by another key")]
    BadSignature,
    #[error("the advert's publisher {0} is not trusted here (the advert was not read further)")]
    UntrustedPublisher(Box<PublisherKey>),
    #[error("component hash mismatch: the advert says {expected}, the bytes hash to {actual}")]
    HashMismatch { expected: String, actual: String },
    #[error("component size mismatch: the advert says {expected} bytes, found {actual}")]
    SizeMismatch { expected: u64, actual: u64 },
    #[error("the key {key} does not match the manifest <owner> {owner}")]
    KeyNotOwner { key: String, owner: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The identity of a package: BLAKE3 of its advert bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentId(pub [u8; 32]);

impl ContentId {
    /// The first 6 bytes in hex, for logs and tables.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }
}

impl fmt::Display for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentId({})", self.short())
    }
}

/// Text that is not a content id.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{text:?} is not a content id (64 hex digits): {reason}")]
pub struct ContentIdError {
    pub text: String,
    reason: hex::FromHexError,
}

impl FromStr for ContentId {
    type Err = ContentIdError;

    fn from_str(text: &str) -> Result<Self, ContentIdError> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut bytes).map_err(|reason| ContentIdError {
            text: text.to_owned(),
            reason,
        })?;
        Ok(Self(bytes))
    }
}

/// The small signed part of a package: manifest, component hash and size,
/// publisher and signature. Parsing checks structure only; see
/// [`Advert::check_signature`].
#[derive(Clone, Debug)]
pub struct Advert {
    bytes: Vec<u8>,
    manifest: Manifest,
    manifest_len: usize,
    component_hash: blake3::Hash,
    component_len: u64,
    publisher: PublisherKey,
    signature: [u8; 64],
    content_id: ContentId,
}

fn take<'a>(input: &mut &'a [u8], n: usize, what: &'static str) -> Result<&'a [u8], PackageError> {
    if input.len() < n {
        return Err(PackageError::Truncated(what));
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Ok(head)
}

fn take_array<const N: usize>(
    input: &mut &[u8],
    what: &'static str,
) -> Result<[u8; N], PackageError> {
    Ok(take(input, N, what)?.try_into().expect("length checked"))
}

fn signed_message(manifest: &[u8], component_hash: &blake3::Hash, component_len: u64) -> Vec<u8> {
    let mut message = Vec::with_capacity(SIGNATURE_DOMAIN.len() + 8 + manifest.len() + 40);
    message.extend_from_slice(SIGNATURE_DOMAIN);
    message.extend_from_slice(&(manifest.len() as u64).to_le_bytes());
    message.extend_from_slice(manifest);
    message.extend_from_slice(component_hash.as_bytes());
    message.extend_from_slice(&component_len.to_le_bytes());
    message
}

impl Advert {
    /// Parses advert bytes (structure, manifest, key), without checking the
    /// signature.
    pub fn parse(bytes: &[u8]) -> Result<Self, PackageError> {
        Self::parse_inner(bytes, false)
    }

    /// Parses advert bytes from someone else (the network): the signature,
    /// over fields at fixed offsets, is checked before the manifest is
    /// parsed, so unsigned bytes cost one signature check and nothing more.
    pub fn parse_signed(bytes: &[u8]) -> Result<Self, PackageError> {
        Self::parse_inner(bytes, true)
    }

    /// Like [`Advert::parse_signed`], checking first that `trusted` accepts
    /// the publisher key (read at its fixed offset): an advert of a
    /// publisher this node would never run costs neither a signature check
    /// nor a manifest parse.
    pub fn parse_signed_by(
        bytes: &[u8],
        trusted: impl Fn(&PublisherKey) -> bool,
    ) -> Result<Self, PackageError> {
        let publisher = Self::publisher_of(bytes)?;
        if !trusted(&publisher) {
            return Err(PackageError::UntrustedPublisher(Box::new(publisher)));
        }
        Self::parse_inner(bytes, true)
    }

    /// The publisher key of advert bytes, from the fixed-size fields alone
    /// (their layout is checked; the manifest is not read).
    pub fn publisher_of(bytes: &[u8]) -> Result<PublisherKey, PackageError> {
        if bytes.len() > MAX_ADVERT_SIZE {
            return Err(PackageError::AdvertTooLarge(bytes.len()));
        }
        if bytes.len() < ADVERT_FIXED {
            return Err(PackageError::Truncated("advert"));
        }
        if &bytes[..8] != ADVERT_MAGIC {
            return Err(PackageError::BadMagic);
        }
        let manifest_len = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
        let expected = ADVERT_FIXED + manifest_len;
        if bytes.len() < expected {
            return Err(PackageError::Truncated("advert"));
        }
        if bytes.len() > expected {
            return Err(PackageError::TrailingBytes((bytes.len() - expected) as u64));
        }
        // magic, length, manifest, component hash and size, then the key.
        let at = 12 + manifest_len + 32 + 8;
        PublisherKey::from_bytes(bytes[at..at + 32].try_into().expect("32 bytes"))
            .map_err(PackageError::BadPublisher)
    }

    fn parse_inner(bytes: &[u8], signed: bool) -> Result<Self, PackageError> {
        if bytes.len() > MAX_ADVERT_SIZE {
            return Err(PackageError::AdvertTooLarge(bytes.len()));
        }
        let mut input = bytes;
        if take(&mut input, 8, "advert magic")? != ADVERT_MAGIC {
            return Err(PackageError::BadMagic);
        }
        let manifest_len = u32::from_le_bytes(take_array(&mut input, "manifest length")?) as usize;
        if manifest_len > MAX_MANIFEST_SIZE {
            return Err(ManifestError::TooLarge { size: manifest_len }.into());
        }
        let manifest_bytes = take(&mut input, manifest_len, "manifest")?;
        let component_hash = blake3::Hash::from_bytes(take_array(&mut input, "component hash")?);
        let component_len = u64::from_le_bytes(take_array(&mut input, "component length")?);
        if component_len > MAX_COMPONENT_SIZE {
            return Err(PackageError::ComponentTooLarge(component_len));
        }
        let publisher = PublisherKey::from_bytes(&take_array(&mut input, "publisher key")?)
            .map_err(PackageError::BadPublisher)?;
        let signature = take_array(&mut input, "signature")?;
        if !input.is_empty() {
            return Err(PackageError::TrailingBytes(input.len() as u64));
        }
        if signed {
            let message = signed_message(manifest_bytes, &component_hash, component_len);
            if !publisher.verify(&message, &signature) {
                return Err(PackageError::BadSignature);
            }
        }
        let manifest = Manifest::parse(manifest_bytes)?;
        match manifest.owner {
            None => return Err(PackageError::NoOwner),
            Some(owner) if owner != publisher => {
                return Err(PackageError::OwnerMismatch {
                    owner: owner.to_string(),
                    publisher: publisher.to_string(),
                });
            }
            Some(_) => {}
        }
        Ok(Self {
            bytes: bytes.to_vec(),
            manifest,
            manifest_len,
            component_hash,
            component_len,
            publisher,
            signature,
            content_id: ContentId(*blake3::hash(bytes).as_bytes()),
        })
    }

    /// Checks the publisher's signature over manifest, component hash and size.
    pub fn check_signature(&self) -> Result<(), PackageError> {
        let manifest = &self.bytes[12..12 + self.manifest_len];
        let message = signed_message(manifest, &self.component_hash, self.component_len);
        if self.publisher.verify(&message, &self.signature) {
            Ok(())
        } else {
            Err(PackageError::BadSignature)
        }
    }

    /// The encoded advert, exactly as signed and hashed.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The canonical manifest XML carried in the advert.
    pub fn manifest_xml(&self) -> &str {
        std::str::from_utf8(&self.bytes[12..12 + self.manifest_len])
            .expect("manifest was parsed as UTF-8")
    }

    pub fn component_hash(&self) -> blake3::Hash {
        self.component_hash
    }

    pub fn component_len(&self) -> u64 {
        self.component_len
    }

    pub fn publisher(&self) -> PublisherKey {
        self.publisher
    }

    pub fn content_id(&self) -> ContentId {
        self.content_id
    }
}

/// A parsed package: advert plus component bytes, not yet verified.
/// Cloning is cheap: the component bytes are shared.
#[derive(Clone, Debug)]
pub struct Package {
    advert: Advert,
    component: bytes::Bytes,
}

/// The outcome of checking a package's signature and component hash.
#[derive(Debug)]
pub struct Integrity {
    pub signature: Result<(), PackageError>,
    pub component: Result<(), PackageError>,
}

impl Integrity {
    pub fn is_ok(&self) -> bool {
        self.signature.is_ok() && self.component.is_ok()
    }
}

impl Package {
    /// Parses a package file's bytes (structure only).
    pub fn parse(bytes: &[u8]) -> Result<Self, PackageError> {
        let mut input = bytes;
        let magic = take(&mut input, 8, "package magic")?;
        if magic != PACKAGE_MAGIC {
            return Err(PackageError::BadMagic);
        }
        let advert_len = u32::from_le_bytes(take_array(&mut input, "advert length")?) as usize;
        if advert_len > MAX_ADVERT_SIZE {
            return Err(PackageError::AdvertTooLarge(advert_len));
        }
        let advert = Advert::parse(take(&mut input, advert_len, "advert")?)?;
        let expected = advert.component_len;
        if (input.len() as u64) < expected {
            return Err(PackageError::Truncated("component"));
        }
        if input.len() as u64 > expected {
            return Err(PackageError::TrailingBytes(input.len() as u64 - expected));
        }
        Ok(Self {
            advert,
            component: bytes::Bytes::copy_from_slice(input),
        })
    }

    /// Reads and parses a package file, refusing oversize files before reading.
    pub fn read_file(path: &std::path::Path) -> Result<Self, PackageError> {
        let size = std::fs::metadata(path)?.len();
        let limit = 12 + MAX_ADVERT_SIZE as u64 + MAX_COMPONENT_SIZE;
        if size > limit {
            return Err(PackageError::ComponentTooLarge(size));
        }
        Self::parse(&std::fs::read(path)?)
    }

    /// Builds a package from a checked advert and component bytes that the
    /// caller received separately (e.g. a verified download).
    pub fn from_parts(advert: Advert, component: impl Into<bytes::Bytes>) -> Self {
        Self {
            advert,
            component: component.into(),
        }
    }

    /// The header (magic, advert length, advert) that precedes the
    /// component in a package file.
    pub fn header(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + self.advert.bytes.len());
        out.extend_from_slice(PACKAGE_MAGIC);
        out.extend_from_slice(&(self.advert.bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.advert.bytes);
        out
    }

    /// The component bytes, shared.
    pub fn component_bytes(&self) -> bytes::Bytes {
        self.component.clone()
    }

    /// The package file bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + self.advert.bytes.len() + self.component.len());
        out.extend_from_slice(PACKAGE_MAGIC);
        out.extend_from_slice(&(self.advert.bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.advert.bytes);
        out.extend_from_slice(&self.component);
        out
    }

    pub fn advert(&self) -> &Advert {
        &self.advert
    }

    pub fn manifest(&self) -> &Manifest {
        &self.advert.manifest
    }

    pub fn content_id(&self) -> ContentId {
        self.advert.content_id
    }

    pub fn component(&self) -> &[u8] {
        &self.component
    }

    /// Checks signature and component hash, reporting both.
    pub fn integrity(&self) -> Integrity {
        let component = if self.component.len() as u64 != self.advert.component_len {
            Err(PackageError::SizeMismatch {
                expected: self.advert.component_len,
                actual: self.component.len() as u64,
            })
        } else {
            let actual = blake3::hash(&self.component);
            if actual == self.advert.component_hash {
                Ok(())
            } else {
                Err(PackageError::HashMismatch {
                    expected: self.advert.component_hash.to_hex().to_string(),
                    actual: actual.to_hex().to_string(),
                })
            }
        };
        Integrity {
            signature: self.advert.check_signature(),
            component,
        }
    }

    /// Verifies signature and component hash; the only way to a
    /// [`VerifiedPackage`].
    pub fn verify(self) -> Result<VerifiedPackage, PackageError> {
        let Integrity {
            signature,
            component,
        } = self.integrity();
        signature?;
        component?;
        Ok(VerifiedPackage(self))
    }
}

/// A package whose signature and component hash have been checked.
/// (Whether its publisher is *trusted* is the node policy's decision.)
#[derive(Clone, Debug)]
pub struct VerifiedPackage(Package);

impl std::ops::Deref for VerifiedPackage {
    type Target = Package;

    fn deref(&self) -> &Package {
        &self.0
    }
}

impl VerifiedPackage {
    pub fn into_inner(self) -> Package {
        self.0
    }
}

/// Packs a component and a manifest into a signed package. The manifest's
/// `<owner>` is set to the key's public key (if present it must match).
pub fn pack(
    component: Vec<u8>,
    manifest: &Manifest,
    key: &SecretKey,
) -> Result<VerifiedPackage, PackageError> {
    let publisher = key.public();
    if let Some(owner) = manifest.owner
        && owner != publisher
    {
        return Err(PackageError::KeyNotOwner {
            key: publisher.to_string(),
            owner: owner.to_string(),
        });
    }
    let component_len = component.len() as u64;
    if component_len > MAX_COMPONENT_SIZE {
        return Err(PackageError::ComponentTooLarge(component_len));
    }
    let mut manifest = manifest.clone();
    manifest.owner = Some(publisher);
    let xml = manifest.to_xml();
    if xml.len() > MAX_MANIFEST_SIZE {
        return Err(ManifestError::TooLarge { size: xml.len() }.into());
    }
    let component_hash = blake3::hash(&component);
    let signature = key.sign(&signed_message(
        xml.as_bytes(),
        &component_hash,
        component_len,
    ));
    let mut bytes = Vec::with_capacity(ADVERT_FIXED + xml.len());
    bytes.extend_from_slice(ADVERT_MAGIC);
    bytes.extend_from_slice(&(xml.len() as u32).to_le_bytes());
    bytes.extend_from_slice(xml.as_bytes());
    bytes.extend_from_slice(component_hash.as_bytes());
    bytes.extend_from_slice(&component_len.to_le_bytes());
    bytes.extend_from_slice(&publisher.to_bytes());
    bytes.extend_from_slice(&signature);
    let advert = Advert::parse(&bytes)?;
    Package::from_parts(advert, component).verify()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(key: &SecretKey) -> VerifiedPackage {
        let manifest =
            Manifest::parse(b"<rps><name>demo</name><version>1.2.3</version></rps>").unwrap();
        pack(b"\0asm component bytes".repeat(50), &manifest, key).unwrap()
    }

    #[test]
    fn round_trip() {
        let key = SecretKey::generate();
        let package = sample(&key);
        let bytes = package.to_bytes();
        let again = Package::parse(&bytes).unwrap().verify().unwrap();
        assert_eq!(again.content_id(), package.content_id());
        assert_eq!(again.manifest().owner, Some(key.public()));
        assert_eq!(again.advert().publisher(), key.public());
        assert_eq!(
            Advert::parse(package.advert().bytes())
                .unwrap()
                .content_id(),
            package.content_id()
        );
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let package = sample(&SecretKey::generate());
        let bytes = package.to_bytes();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            let outcome = Package::parse(&bad).and_then(Package::verify);
            assert!(outcome.is_err(), "flipping byte {i} went unnoticed");
        }
    }

    #[test]
    fn truncation_and_trailing_bytes() {
        let bytes = sample(&SecretKey::generate()).to_bytes();
        for len in [0, 4, 11, 12, 40, bytes.len() - 1] {
            assert!(Package::parse(&bytes[..len]).is_err(), "truncated to {len}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(
            Package::parse(&long),
            Err(PackageError::TrailingBytes(1))
        ));
    }

    #[test]
    fn resigned_by_another_key() {
        let package = sample(&SecretKey::generate());
        let other = SecretKey::generate();
        // Keep the manifest (owner = original) but sign with another key:
        // the owner check refuses it.
        assert!(matches!(
            pack(package.component().to_vec(), package.manifest(), &other),
            Err(PackageError::KeyNotOwner { .. })
        ));
        // Splice the other key into the advert: owner mismatch.
        let mut bytes = package.to_bytes();
        let publisher_at = bytes.len() - package.component().len() - 64 - 32;
        bytes[publisher_at..publisher_at + 32].copy_from_slice(&other.public().to_bytes());
        assert!(matches!(
            Package::parse(&bytes),
            Err(PackageError::OwnerMismatch { .. })
        ));
    }

    #[test]
    fn a_network_advert_is_checked_for_its_signature_before_its_manifest_is_parsed() {
        let package = sample(&SecretKey::generate());
        let good = package.advert().bytes();
        assert!(Advert::parse_signed(good).is_ok());
        // Break the manifest's XML (12 bytes in: magic and length first).
        let mut bad = good.to_vec();
        assert_eq!(bad[12], b'<');
        bad[12] = b'!';
        assert!(matches!(
            Advert::parse(&bad),
            Err(PackageError::Manifest(_))
        ));
        assert!(matches!(
            Advert::parse_signed(&bad),
            Err(PackageError::BadSignature)
        ));
    }

    #[test]
    fn an_untrusted_publishers_attribute_bomb_costs_microseconds() {
        let stranger = SecretKey::generate();
        let package = sample(&stranger);
        let good = package.advert().bytes();
        assert_eq!(Advert::publisher_of(good).unwrap(), stranger.public());
        assert!(Advert::parse_signed_by(good, |k| *k == stranger.public()).is_ok());
        // A signed advert whose manifest is 60 KiB of attributes.
        let attributes: String = (0..6000).map(|i| format!(" a{i}=\"\"")).collect();
        let xml = format!("<rps{attributes}><name>x</name></rps>");
        let mut bomb = good[..8].to_vec();
        bomb.extend_from_slice(&(xml.len() as u32).to_le_bytes());
        bomb.extend_from_slice(xml.as_bytes());
        bomb.extend_from_slice(&good[good.len() - (32 + 8 + 32 + 64)..]);
        let start = std::time::Instant::now();
        for _ in 0..1000 {
            let refused = Advert::parse_signed_by(&bomb, |_| false);
            assert!(matches!(refused, Err(PackageError::UntrustedPublisher(_))));
        }
        let each = start.elapsed() / 1000;
        assert!(
            each < std::time::Duration::from_millis(1),
            "{each:?} per advert"
        );
        // Every layout error is caught from the fixed fields.
        assert!(matches!(
            Advert::publisher_of(&bomb[..bomb.len() - 1]),
            Err(PackageError::Truncated(_))
        ));
        let mut longer = bomb.clone();
        longer.push(0);
        assert!(matches!(
            Advert::publisher_of(&longer),
            Err(PackageError::TrailingBytes(1))
        ));
        assert!(matches!(
            Advert::publisher_of(b"short"),
            Err(PackageError::Truncated(_))
        ));
    }

    #[test]
    fn content_id_text() {
        let id = sample(&SecretKey::generate()).content_id();
        assert_eq!(id.to_string().parse::<ContentId>().unwrap(), id);
        assert!("abc".parse::<ContentId>().is_err());
    }
}
