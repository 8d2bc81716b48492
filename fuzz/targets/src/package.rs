//! Package files (advert and component), parsed and verified.

use sp2a::package::{Package, VerifiedPackage, pack};

/// The small component of [`crate::wave`], packed with its manifest by
/// [`crate::publisher`].
pub fn packed() -> VerifiedPackage {
    let manifest = sp2a::package::Manifest::parse(crate::wave::MANIFEST.as_bytes())
        .expect("the fixture manifest parses");
    pack(crate::wave::component(), &manifest, &crate::publisher()).expect("the fixture packs")
}

pub fn seeds() -> Vec<Vec<u8>> {
    vec![packed().to_bytes()]
}

pub fn run(bytes: &[u8]) -> String {
    match Package::parse(bytes) {
        Ok(package) => crate::class(&package.verify()),
        Err(e) => crate::class::<(), _>(&Err(e)),
    }
}
