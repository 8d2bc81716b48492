//! Signed adverts as peers send them: publisher, signature, then manifest.

use sp2a::package::Advert;

pub fn seeds() -> Vec<Vec<u8>> {
    vec![crate::package::packed().advert().bytes().to_vec()]
}

pub fn run(bytes: &[u8]) -> String {
    crate::class(&Advert::parse_signed(bytes))
}
