//! The fuzz targets (`fuzz/targets`: every parser and check that takes
//! bytes from outside) under the stable mutation fuzzer of
//! `sp2a_tests::fuzz`: `./run test` runs each for 2 s as a smoke test;
//! the coverage-guided runs are cargo-fuzz's (`./run fuzz TARGET
//! [SECONDS]`, nightly), from the committed corpora in `fuzz/corpus/`.
//! Every crash found becomes a regression test below, and a crash fails
//! the target.

use sp2a_fuzz_targets::{TARGETS, Target};
use sp2a_tests::fuzz::{self, Report};

fn check(report: Report) {
    eprintln!("{report}");
    assert!(
        report.crashes.is_empty(),
        "{report}: {:?}",
        &report.crashes[..report.crashes.len().min(5)]
    );
    assert!(
        report.slowest < fuzz::SLOW * 5,
        "{report}: an input took {:?}",
        report.slowest
    );
}

fn target(name: &str) -> Target {
    *TARGETS
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no fuzz target {name}"))
}

/// The stable fuzzer on one target, from its seeds and its committed corpus.
fn smoke(name: &str) {
    let target = target(name);
    let mut seeds = (target.seeds)();
    seeds.extend(corpus(name).into_iter().map(|(_, bytes)| bytes));
    check(fuzz::run(name, seeds, target.run));
}

/// The files of `fuzz/corpus/<target>/`, by name.
fn corpus(name: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(name);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<(String, Vec<u8>)> = entries
        .filter_map(|e| e.ok())
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).unwrap())
        })
        .collect();
    files.sort();
    files
}

fn corpus_dir(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(name)
}

/// The name a seed has in its corpus: its BLAKE3, as libFuzzer names
/// inputs by a hash of their bytes.
fn seed_name(bytes: &[u8]) -> String {
    format!("seed-{}", &blake3::hash(bytes).to_hex()[..16])
}

/// Each target's seeds are in its committed corpus, so the coverage-guided
/// runs start from them (`SP2A_WRITE_CORPUS=1` writes those missing).
#[test]
fn every_seed_is_in_its_committed_corpus() {
    let write = std::env::var_os("SP2A_WRITE_CORPUS").is_some();
    let mut missing = Vec::new();
    for target in TARGETS {
        let have: std::collections::HashSet<String> = corpus(target.name)
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        for seed in (target.seeds)() {
            let name = seed_name(&seed);
            if have.contains(&name) {
                continue;
            }
            if write {
                std::fs::create_dir_all(corpus_dir(target.name)).unwrap();
                std::fs::write(corpus_dir(target.name).join(&name), &seed).unwrap();
            } else {
                missing.push(format!("{}/{name}", target.name));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "seeds missing from fuzz/corpus (SP2A_WRITE_CORPUS=1 writes them): {missing:?}"
    );
}

/// The seeds are inputs the targets accept (a seed that only reaches an
/// early refusal would start the fuzzers nowhere).
#[test]
fn the_seeds_reach_deep_into_their_targets() {
    let outcomes = |name: &str| -> Vec<String> {
        let target = target(name);
        (target.seeds)().iter().map(|s| (target.run)(s)).collect()
    };
    for outcome in outcomes("wave") {
        assert!(outcome.ends_with(" ok"), "{outcome}");
    }
    for outcome in outcomes("manifest") {
        assert_eq!(outcome, "ok");
    }
    for name in ["package", "advert"] {
        assert_eq!(outcomes(name), ["ok"], "{name}");
    }
    let url = outcomes("url");
    assert!(
        url.iter().filter(|o| *o == "admitted").count() >= 3,
        "{url:?}"
    );
    assert!(url.iter().any(|o| o.starts_with("refused")), "{url:?}");
    assert!(outcomes("restore").starts_with(&["kept 7".to_owned(), "kept 6".to_owned()]));
    assert!(outcomes("evidence").iter().any(|o| o.ends_with("advice 2")));
}

#[test]
fn fuzz_manifest_parser() {
    smoke("manifest");
}

#[test]
fn fuzz_package_parser() {
    smoke("package");
}

#[test]
fn fuzz_advert_parser() {
    smoke("advert");
}

/// Every message of the request-response protocols, load reports,
/// receipts and evaluations.
#[test]
fn fuzz_wire_messages() {
    smoke("wire");
}

/// WAVE call text typed against a real component's exports.
#[test]
fn fuzz_wave_calls() {
    smoke("wave");
}

/// Control-socket requests.
#[test]
fn fuzz_control_requests() {
    smoke("control");
}

/// Grants and requests through the HTTP allow-list, against a lenient
/// server's normalisation.
#[test]
fn fuzz_http_allow_list() {
    smoke("url");
}

/// Saved downloads resumed from damaged files.
#[test]
fn fuzz_saved_download_restore() {
    smoke("restore");
}

/// Advice answers and the evidence in them.
#[test]
fn fuzz_evidence_and_advice() {
    smoke("evidence");
}

/// A 99-byte `Blocks` request that the 10-minute run reported at 113 ms, while
/// builds were running on both cores: replayed alone it takes microseconds.
#[test]
fn the_slow_report_of_the_long_wire_run_was_the_machine_not_the_input() {
    let input: &[u8] = &[
        0xa1, 0x66, 0x42, 0x6c, 0x6f, 0x63, 0x6b, 0x73, 0xa4, 0x6a, 0x63, 0x6f, 0x6e, 0x74, 0x65,
        0xa1, 0x6e, 0x74, 0x5f, 0x69, 0x64, 0x58, 0x20, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01,
        0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01,
        0x01, 0x01, 0x01, 0x01, 0x01, 0x71, 0xb9, 0xe2, 0x31, 0x4e, 0x70, 0x0b, 0x3e, 0x9a, 0x75,
        0xb9, 0x01, 0x01, 0x01, 0x01, 0x01, 0x6b, 0x66, 0x69, 0x72, 0x73, 0x74, 0x5f, 0x62, 0x6c,
        0x6f, 0x63, 0x6b, 0x03, 0x66, 0x62, 0x6c, 0x6f, 0x63, 0x6b, 0x73, 0x04, 0x68, 0x71, 0x75,
        0x65, 0x75, 0x65, 0x5f, 0x6d, 0x73, 0x19, 0x01, 0xf4,
    ];
    assert_eq!(input.len(), 99);
    let start = std::time::Instant::now();
    for _ in 0..10_000 {
        std::hint::black_box(sp2a_fuzz_targets::wire::run(input));
    }
    let each = start.elapsed() / 10_000;
    eprintln!("the reported input decodes in {each:?}");
    assert!(each < fuzz::SLOW / 100, "{each:?}");
}
