//! A small mutation fuzzer that runs on the stable toolchain, for the fuzz
//! targets of `fuzz/targets` (the parsers and checks that take bytes from
//! outside). The coverage-guided runs are cargo-fuzz's (`./run fuzz`); this
//! one is the short smoke run of `./run test`.
//!
//! Each target starts from real inputs (its seeds) and mutates them: bit
//! flips, interesting bytes and lengths, insertions, deletions, repeated and
//! spliced ranges. It has no coverage feedback; instead an input that gives
//! an outcome not seen before (a new error kind, a new success) joins the
//! corpus, so mutations build on inputs that reach somewhere new. A panic is
//! a crash: its input is saved and the target fails. An input slower than
//! [`SLOW`] is reported too (a quadratic parser shows up there).
//!
//! `SP2A_FUZZ_SECS` sets the time per target (default: a 2-second smoke
//! run); `SP2A_FUZZ_SEED` the random seed.

use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// An input slower than this is reported.
pub const SLOW: Duration = Duration::from_millis(100);
/// Largest input the mutator makes.
const MAX_INPUT: usize = 256 * 1024;
/// Inputs kept to mutate further.
const MAX_CORPUS: usize = 4096;

/// What a run found.
#[derive(Debug)]
pub struct Report {
    pub target: String,
    pub execs: u64,
    pub seconds: f64,
    pub corpus: usize,
    pub outcomes: usize,
    /// Files holding inputs that panicked.
    pub crashes: Vec<PathBuf>,
    /// The slowest input's time.
    pub slowest: Duration,
}

impl Report {
    pub fn per_second(&self) -> f64 {
        self.execs as f64 / self.seconds.max(1e-9)
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "fuzz {}: {} execs in {:.0} s ({:.0}/s), corpus {}, {} outcomes, {} crash(es), slowest input {:.1} ms",
            self.target,
            self.execs,
            self.seconds,
            self.per_second(),
            self.corpus,
            self.outcomes,
            self.crashes.len(),
            self.slowest.as_secs_f64() * 1000.0
        )
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Fuzzes `target` from `seeds` for `SP2A_FUZZ_SECS` (default 2 s).
/// `target` returns the input's outcome class (e.g. an error kind).
pub fn run(name: &str, seeds: Vec<Vec<u8>>, mut target: impl FnMut(&[u8]) -> String) -> Report {
    let seconds = env_u64("SP2A_FUZZ_SECS").unwrap_or(2);
    let seed = env_u64("SP2A_FUZZ_SEED").unwrap_or_else(rand::random);
    let mut rng = StdRng::seed_from_u64(seed);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut corpus: Vec<Vec<u8>> = seeds;
    if corpus.is_empty() {
        corpus.push(Vec::new());
    }
    let mut outcomes = HashSet::new();
    let mut crashes = Vec::new();
    let mut slowest = Duration::ZERO;
    let mut execs = 0u64;
    // The seeds themselves first.
    let mut queue: Vec<Vec<u8>> = corpus.clone();
    // Panics are caught and counted; keep the default hook from printing each.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    while Instant::now() < deadline {
        let input = queue.pop().unwrap_or_else(|| mutate(&corpus, &mut rng));
        let start = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| target(&input)));
        let took = start.elapsed();
        execs += 1;
        if took > slowest {
            slowest = took;
            if took > SLOW {
                save(name, "slow", &input);
            }
        }
        match outcome {
            Ok(outcome) => {
                if outcomes.insert(outcome) && corpus.len() < MAX_CORPUS {
                    corpus.push(input);
                }
            }
            Err(_) => crashes.push(save(name, "crash", &input)),
        }
    }
    std::panic::set_hook(hook);
    Report {
        target: name.to_owned(),
        execs,
        seconds: started.elapsed().as_secs_f64(),
        corpus: corpus.len(),
        outcomes: outcomes.len(),
        crashes,
        slowest,
    }
}

/// Writes an input to `target/fuzz/<target>-<kind>-<hash>.bin`.
fn save(target: &str, kind: &str, input: &[u8]) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("fuzz");
    let _ = std::fs::create_dir_all(&dir);
    let hash = blake3::hash(input).to_hex();
    let path = dir.join(format!("{target}-{kind}-{}.bin", &hash[..16]));
    let _ = std::fs::write(&path, input);
    path
}

/// One to four mutations of a corpus entry.
fn mutate(corpus: &[Vec<u8>], rng: &mut StdRng) -> Vec<u8> {
    let mut input = corpus[rng.gen_range(0..corpus.len())].clone();
    for _ in 0..rng.gen_range(1..=4) {
        mutate_once(&mut input, corpus, rng);
    }
    input.truncate(MAX_INPUT);
    input
}

fn mutate_once(input: &mut Vec<u8>, corpus: &[Vec<u8>], rng: &mut StdRng) {
    const INTERESTING: [u8; 8] = [0, 1, 0x7f, 0x80, 0xff, b'<', b'"', b'('];
    let len = input.len();
    let at = |rng: &mut StdRng| if len == 0 { 0 } else { rng.gen_range(0..len) };
    match rng.gen_range(0..9) {
        0 if len > 0 => {
            let i = at(rng);
            input[i] ^= 1 << rng.gen_range(0..8);
        }
        1 if len > 0 => {
            let i = at(rng);
            input[i] = INTERESTING[rng.gen_range(0..INTERESTING.len())];
        }
        2 => {
            let i = at(rng);
            let n = rng.gen_range(1..=16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.r#gen()).collect();
            input.splice(i..i, bytes);
        }
        3 if len > 0 => {
            let i = at(rng);
            let n = rng.gen_range(1..=(len - i).min(64));
            input.drain(i..i + n);
        }
        4 if len > 0 => {
            // Repeat a range (nesting, long lists).
            let i = at(rng);
            let n = rng.gen_range(1..=(len - i).min(32));
            let range = input[i..i + n].to_vec();
            let times = rng.gen_range(1..=64);
            let at = rng.gen_range(i..=len);
            input.splice(at..at, range.iter().copied().cycle().take(n * times));
        }
        5 => {
            // Splice in part of another input.
            let other = &corpus[rng.gen_range(0..corpus.len())];
            if !other.is_empty() {
                let from = rng.gen_range(0..other.len());
                let n = rng.gen_range(1..=(other.len() - from).min(256));
                let i = at(rng);
                input.splice(i..i, other[from..from + n].iter().copied());
            }
        }
        6 if len >= 4 => {
            // An interesting length, little- or big-endian.
            let values = [
                0u32,
                1,
                0x7f,
                0xff,
                0xffff,
                u32::MAX,
                len as u32,
                len as u32 + 1,
            ];
            let value = values[rng.gen_range(0..values.len())];
            let bytes = if rng.r#gen() {
                value.to_le_bytes()
            } else {
                value.to_be_bytes()
            };
            let i = rng.gen_range(0..=len - 4);
            input[i..i + 4].copy_from_slice(&bytes);
        }
        7 if len > 0 => input.truncate(at(rng)),
        _ => {
            let i = at(rng);
            input.insert(i.min(input.len()), rng.r#gen());
        }
    }
}
