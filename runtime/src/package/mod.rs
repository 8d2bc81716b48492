//! Service packages: the XML manifest, the one-file signed package format,
//! content ids and publisher keys.
//!
//! A package is read in two steps. [`Package::parse`] only checks structure
//! (magic, lengths, a well-formed manifest); [`Package::verify`] checks the
//! publisher's signature and the component hash and is the only way to obtain
//! a [`VerifiedPackage`], which is what the sandbox accepts.

mod format;
pub(crate) mod keys;
pub mod manifest;
pub mod units;
pub mod url;

pub use format::{
    Advert, ContentId, ContentIdError, Integrity, MAX_COMPONENT_SIZE, MAX_MANIFEST_SIZE, Package,
    PackageError, VerifiedPackage, pack,
};
pub use keys::{KeyError, PublisherKey, SecretKey};
pub use manifest::{Manifest, ManifestError, is_service_name};
