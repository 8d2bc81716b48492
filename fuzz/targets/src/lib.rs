//! The fuzz targets: for each, its seeds (real inputs) and its body, which
//! takes any bytes, must never panic, and returns the input's outcome class
//! (the stable mutation fuzzer keeps inputs with new classes; libFuzzer
//! ignores it and follows coverage). Shared by the cargo-fuzz crate
//! (`fuzz/fuzz_targets/`, nightly, `./run fuzz TARGET [SECONDS]`) and the
//! stable smoke run in `./run test` (`tests/tests/fuzz.rs`), so both fuzz
//! the same code; `fuzz/corpus/<target>/` holds the seeds as files.
//!
//! Targets that check more than "no panic" state their oracle: `url` (no
//! admitted request leaves its grant's prefix once a lenient server
//! normalises it), `restore` (a resumed download keeps only blocks equal to
//! the real component's), `evidence` (admitted advice is the advisor's own
//! and about the provider asked).

pub mod advert;
pub mod control;
pub mod evidence;
pub mod manifest;
pub mod package;
pub mod restore;
pub mod url;
pub mod wave;
pub mod wire;

/// Every target by name: its seeds and its body.
pub const TARGETS: &[Target] = &[
    Target {
        name: "manifest",
        seeds: manifest::seeds,
        run: manifest::run,
    },
    Target {
        name: "package",
        seeds: package::seeds,
        run: package::run,
    },
    Target {
        name: "advert",
        seeds: advert::seeds,
        run: advert::run,
    },
    Target {
        name: "wire",
        seeds: wire::seeds,
        run: wire::run,
    },
    Target {
        name: "wave",
        seeds: wave::seeds,
        run: wave::run,
    },
    Target {
        name: "control",
        seeds: control::seeds,
        run: control::run,
    },
    Target {
        name: "url",
        seeds: url::seeds,
        run: url::run,
    },
    Target {
        name: "restore",
        seeds: restore::seeds,
        run: restore::run,
    },
    Target {
        name: "evidence",
        seeds: evidence::seeds,
        run: evidence::run,
    },
];

/// One fuzz target.
#[derive(Clone, Copy)]
pub struct Target {
    pub name: &'static str,
    pub seeds: fn() -> Vec<Vec<u8>>,
    pub run: fn(&[u8]) -> String,
}

/// The outcome class of a result: `ok`, or the error's kind (its Debug
/// text up to the first character that is not a letter, `_` or `(`, so
/// that numbers and names in the error do not make new classes).
pub fn class<T, E: std::fmt::Debug>(result: &Result<T, E>) -> String {
    match result {
        Ok(_) => "ok".into(),
        Err(e) => {
            let text = format!("{e:?}");
            let kind: String = text
                .chars()
                .take_while(|c| c.is_alphabetic() || *c == '(' || *c == '_')
                .take(48)
                .collect();
            format!("err {kind}")
        }
    }
}

/// A fixed publisher key for seeds (fuzzing needs no secret).
pub fn publisher() -> sp2a::package::SecretKey {
    sp2a::package::SecretKey::from_seed(&[7; 32])
}

/// The repository's example services' manifests.
pub fn example_manifests() -> Vec<Vec<u8>> {
    let services = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../services");
    ["hello", "checksum", "notes", "stream", "live"]
        .iter()
        .filter_map(|name| std::fs::read(services.join(name).join("rps.xml")).ok())
        .collect()
}
