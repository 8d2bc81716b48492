//! Manifests (`rps.xml`) as a publisher writes them and as `pack` signs them.

use sp2a::package::Manifest;

pub fn seeds() -> Vec<Vec<u8>> {
    let mut seeds = crate::example_manifests();
    // As packed: with the publisher's <owner> and every section filled in.
    seeds.push(
        crate::package::packed()
            .advert()
            .manifest_xml()
            .as_bytes()
            .to_vec(),
    );
    seeds
}

pub fn run(bytes: &[u8]) -> String {
    crate::class(&Manifest::parse(bytes))
}
