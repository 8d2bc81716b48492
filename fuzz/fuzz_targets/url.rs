#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sp2a_fuzz_targets::url::run(data);
});
