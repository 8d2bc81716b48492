//! A guest that misbehaves on request, to test the sandbox's limits and
//! capability checks.

use std::hint::black_box;

sp2a_guest::service!({
    path: ["../../../wit", "wit"],
    world: "sp2a-test:hostile/hostile",
});

struct Hostile;

/// Recursion the compiler cannot turn into a loop, with no address-taken
/// locals: every frame lives on the wasm stack, not in linear memory.
#[inline(never)]
fn recurse_native(depth: u64) -> u64 {
    if depth == 0 {
        0
    } else if depth % 1_000_003 == 17 {
        recurse_native(depth - 1) ^ recurse_native(depth / 2)
    } else {
        recurse_native(depth - 1).rotate_left(1) ^ depth
    }
}

fn recurse(depth: u64) -> u64 {
    if depth == 0 {
        return 0;
    }
    // Keep a frame alive so the recursion is not turned into a loop.
    let frame = black_box([depth; 16]);
    1 + recurse(black_box(depth - 1)) + frame[15] % 2
}

impl exports::sp2a_test::hostile::attacks::Guest for Hostile {
    fn spin() -> u64 {
        let mut n = 0u64;
        loop {
            n = black_box(n.wrapping_add(1));
            if n == u64::MAX {
                return n;
            }
        }
    }

    fn spin_clock() -> u64 {
        let start = std::time::Instant::now();
        loop {
            if start.elapsed().as_secs() > 3600 {
                return 1;
            }
        }
    }

    fn nap(ms: u32) -> u32 {
        std::thread::sleep(std::time::Duration::from_millis(u64::from(ms)));
        ms
    }

    fn allocate(mib: u32) -> u32 {
        let mut blocks = Vec::new();
        for i in 0..mib {
            let block = vec![i as u8 | 1; 1 << 20];
            blocks.push(black_box(block));
        }
        blocks.len() as u32
    }

    fn recurse(depth: u64) -> u64 {
        recurse(depth)
    }

    fn recurse_native(depth: u64) -> u64 {
        recurse_native(depth)
    }

    fn read_file(path: String) -> Result<String, String> {
        std::fs::read_to_string(&path).map_err(|e| e.to_string())
    }

    fn write_file(path: String, text: String) -> Result<(), String> {
        std::fs::write(&path, text).map_err(|e| e.to_string())
    }

    fn list_dir(path: String) -> Result<Vec<String>, String> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&path).map_err(|e| e.to_string())? {
            let entry = entry.map_err(|e| e.to_string())?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    fn env_var(name: String) -> Option<String> {
        std::env::var(name).ok()
    }

    fn connect(address: String) -> Result<(), String> {
        std::net::TcpStream::connect(address.as_str())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn crash(message: String) {
        panic!("{message}");
    }

    fn print(text: String) {
        println!("{text}");
        eprintln!("{text}");
    }

    fn log_flood(count: u32) -> u32 {
        for i in 0..count {
            sp2a_guest::info!("flood {i}");
        }
        count
    }

    fn bump() -> u32 {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
    }

    fn echo(n: u32) -> u32 {
        n
    }
}

export!(Hostile);
