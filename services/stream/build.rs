//! Generates the media sample the service carries: a 2 MiB, 16-bit mono
//! 44.1 kHz PCM WAV of a chord progression with a gentle envelope. It is
//! synthesised with integer arithmetic only (no media file in the
//! repository, no floating point), so every build on every platform has the
//! same bytes.

const RATE: u32 = 44_100;
const TOTAL: usize = 2 * 1024 * 1024;

fn main() {
    let samples = (TOTAL - 44) / 2;
    let mut wav = Vec::with_capacity(TOTAL);
    let data_len = (samples * 2) as u32;
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data_len).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&RATE.to_le_bytes());
    wav.extend_from_slice(&(RATE * 2).to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data_len.to_le_bytes());
    // I - vi - IV - V in C major, one chord per second, as triangle waves.
    // Integer arithmetic only, so the bytes are identical on every platform.
    let chords: [[u64; 3]; 4] = [
        [261_630, 329_630, 392_000],
        [220_000, 261_630, 329_630],
        [174_610, 220_000, 261_630],
        [196_000, 246_940, 293_660],
    ];
    let mut phases = [0u32; 4];
    let mut noise = 0x2545_f491_4f6c_dd1du64;
    for i in 0..samples {
        let second = i / RATE as usize;
        let within = (i % RATE as usize) as i64; // samples into the chord
        let chord = &chords[second % chords.len()];
        // Frequencies in millihertz -> 32-bit phase steps.
        let voices = [chord[0], chord[1], chord[2], chord[0] / 2];
        let mut value: i64 = 0;
        for (voice, frequency) in voices.iter().enumerate() {
            let step = ((frequency << 32) / (u64::from(RATE) * 1000)) as u32;
            phases[voice] = phases[voice].wrapping_add(step);
            let phase = i64::from(phases[voice] >> 16); // 0..65536
            let triangle = if phase < 32_768 { phase * 2 - 32_768 } else { 98_304 - phase * 2 };
            value += if voice == 3 { triangle / 2 } else { triangle };
        }
        value /= 4;
        // Attack over 50 ms, linear release over the rest of the second.
        let attack = (within * 20).min(i64::from(RATE));
        let release = i64::from(RATE) - within;
        value = value * attack / i64::from(RATE) * release / i64::from(RATE);
        // A little noise, like a real recording.
        noise ^= noise << 13;
        noise ^= noise >> 7;
        noise ^= noise << 17;
        value += ((noise >> 54) as i64) - 512;
        let sample = value.clamp(i64::from(i16::MIN), i64::from(i16::MAX)) as i16;
        wav.extend_from_slice(&sample.to_le_bytes());
    }
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    std::fs::write(out.join("sample.wav"), &wav).expect("write the sample");
    println!("cargo:rerun-if-changed=build.rs");
}
