//! Micro-benchmarks of the pure cores and the data path, each next to a
//! baseline in the same run: `./run bench micro` (the dev profile, like
//! every other benchmark of the project).
//!
//! * `swarm_download`: every decision of a 2 MiB (128-block) swarming
//!   download from 20 providers that answer at once, against `baseline_loop`,
//!   the same number of requests made by a plain round-robin.
//! * `verify_chunk`: checking one 64 KiB chunk against the component hash
//!   (BLAKE3 verified streaming), against `baseline_blake3`, hashing the
//!   same bytes.

use std::time::{Duration, Instant};

use sp2a::blocks::{Bitmap, Download, encode, outboard};
use sp2a::swarm::{Action, Answer, Ask, Event, Holdings, Params, SwarmCore};

fn main() {
    divan::main();
}

const BLOCKS: u64 = 128;
const PROVIDERS: u32 = 20;

/// Drives one download to completion with providers that hold everything
/// and answer every request at once; returns the number of requests.
fn download() -> u32 {
    let now = Instant::now();
    let params = Params::new(BLOCKS);
    let providers = (0..PROVIDERS).map(|p| (p, ()));
    let mut core = SwarmCore::new(params, providers, now, 1);
    let mut requests = 0;
    loop {
        let mut answers = Vec::new();
        while let Some(action) = core.poll_action(now) {
            match action {
                Action::Request { id, ask, .. } => {
                    requests += 1;
                    let (first, count) = match ask {
                        Ask::Blocks { first, count } => (first, count),
                        Ask::Want { wanted, max } => {
                            let first = wanted.iter().next().expect("a Want offers blocks");
                            let count = (first..BLOCKS)
                                .take(max as usize)
                                .take_while(|b| wanted.contains(*b))
                                .count() as u32;
                            (first, count)
                        }
                    };
                    answers.push((id, first, count));
                }
                Action::Complete => return requests,
                Action::GiveUp => panic!("gave up"),
                _ => {}
            }
        }
        for (id, first, count) in answers {
            let answer = Answer::Blocks {
                first,
                verified: count,
                new_bytes: u64::from(count) << 14,
                bad: None,
                holdings: Holdings::All,
                hints: Vec::new(),
            };
            core.handle(
                now + Duration::from_millis(1),
                Event::Answered { id, answer },
            );
        }
    }
}

#[divan::bench]
fn swarm_download() -> u32 {
    download()
}

#[divan::bench]
fn baseline_loop(bencher: divan::Bencher) {
    let requests = download();
    bencher.bench(|| {
        let mut have = Bitmap::empty(BLOCKS);
        let mut next = 0;
        for r in 0..requests {
            let provider = r % PROVIDERS;
            for b in next..(next + 4).min(BLOCKS) {
                have.insert(b);
            }
            next = (next + 4) % BLOCKS;
            divan::black_box(provider);
        }
        have
    });
}

#[divan::bench]
fn verify_chunk(bencher: divan::Bencher) {
    let data: Vec<u8> = (0..2 << 20).map(|i: u32| (i * 31 / 7) as u8).collect();
    let tree = outboard(&data);
    let encoded = encode(&data, &tree, 8, 4).expect("in range");
    let root = blake3::hash(&data);
    bencher
        .with_inputs(|| Download::new(root, data.len() as u64))
        .bench_refs(|download| {
            download
                .accept(8, 4, data.len() as u64, &encoded)
                .expect("verifies")
        });
}

#[divan::bench]
fn baseline_blake3(bencher: divan::Bencher) {
    let chunk: Vec<u8> = (0..64 << 10).map(|i: u32| (i * 31 / 7) as u8).collect();
    bencher.bench(|| blake3::hash(divan::black_box(&chunk)));
}
