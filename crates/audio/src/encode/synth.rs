//! A synthetic, speech-like voice note for tests and benchmarks: the
//! encoders' work depends on what they are fed (Opus and MP3 spend their
//! effort on voiced, formant-shaped sound, little on pauses), so timing them
//! on a sine or on noise would say little about real notes.
//!
//! Words of 1–4 syllables: voiced vowels (a glottal pulse train with
//! intonation and jitter, through three formant resonators), some unvoiced
//! fricatives (shaped noise), short gaps between words and longer pauses
//! between phrases; under it a microphone noise floor near −45 dBFS; the
//! whole normalised to −3 dBFS peak. Deterministic for a seed.

use super::pcm::Pcm;

/// `seconds` of speech-like mono audio at `rate` Hz.
pub fn speech_like(seconds: f64, rate: u32, seed: u64) -> Pcm {
    let fs = f64::from(rate);
    let total = (seconds * fs).round() as usize;
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut out = vec![0f32; total];
    let mut at = 0usize;
    let mut words_left = 0u32;
    while at < total {
        if words_left == 0 {
            // A phrase pause, then 4–10 words.
            at += (fs * rng.range(0.4, 0.9)) as usize;
            words_left = 4 + (rng.next() % 7) as u32;
        }
        words_left -= 1;
        let pitch = rng.range(95.0, 210.0);
        for _ in 0..1 + rng.next() % 4 {
            if rng.next().is_multiple_of(4) {
                let len = (fs * rng.range(0.05, 0.14)) as usize;
                fricative(&mut out, at, len, fs, &mut rng);
                at += len;
            }
            let len = (fs * rng.range(0.12, 0.3)) as usize;
            vowel(&mut out, at, len, fs, pitch, &mut rng);
            at += len;
        }
        at += (fs * rng.range(0.05, 0.15)) as usize;
    }
    // Microphone noise floor: gently low-passed white noise.
    let mut lp = 0.0;
    for s in out.iter_mut() {
        lp = 0.7 * lp + 0.3 * rng.range(-1.0, 1.0);
        *s += (lp * 0.012) as f32;
    }
    let peak = out.iter().fold(0f32, |m, s| m.max(s.abs()));
    if peak > 0.0 {
        let gain = 0.708 / peak; // −3 dBFS
        out.iter_mut().for_each(|s| *s *= gain);
    }
    Pcm::new(rate, out)
}

/// A voiced syllable: pulses at a gliding pitch through three formants,
/// with a smooth attack and release.
fn vowel(out: &mut [f32], at: usize, len: usize, fs: f64, pitch: f64, rng: &mut Rng) {
    let f = [
        rng.range(300.0, 800.0),
        rng.range(900.0, 2300.0),
        rng.range(2400.0, 3100.0),
    ];
    let bw = [80.0, 110.0, 160.0];
    let gains = [1.0, 0.6, 0.25];
    let mut filters: Vec<Resonator> = (0..3).map(|i| Resonator::new(f[i], bw[i], fs)).collect();
    let glide = rng.range(-0.25, 0.2);
    let mut phase = 0.0;
    for i in 0..len {
        let Some(dst) = out.get_mut(at + i) else {
            return;
        };
        let t = i as f64 / len as f64;
        let f0 = pitch * (1.0 + glide * t) * (1.0 + 0.01 * rng.range(-1.0, 1.0));
        phase += f0 / fs;
        // A glottal pulse once per period, a little aspiration noise.
        let excitation = if phase >= 1.0 {
            phase -= 1.0;
            1.0
        } else {
            0.0
        } + 0.02 * rng.range(-1.0, 1.0);
        let v: f64 = filters
            .iter_mut()
            .zip(gains)
            .map(|(r, g)| g * r.step(excitation))
            .sum();
        let env = (std::f64::consts::PI * t).sin().powf(0.6);
        *dst += (v * env * 0.05) as f32;
    }
}

/// An unvoiced consonant: high-passed noise with a short envelope.
fn fricative(out: &mut [f32], at: usize, len: usize, fs: f64, rng: &mut Rng) {
    let mut r = Resonator::new(rng.range(3500.0, 6000.0), 1500.0, fs);
    for i in 0..len {
        let Some(dst) = out.get_mut(at + i) else {
            return;
        };
        let env = (std::f64::consts::PI * i as f64 / len as f64).sin();
        *dst += (r.step(rng.range(-1.0, 1.0)) * env * 0.02) as f32;
    }
}

/// A two-pole resonator at `freq` Hz with bandwidth `bw` Hz.
struct Resonator {
    a1: f64,
    a2: f64,
    y1: f64,
    y2: f64,
}

impl Resonator {
    fn new(freq: f64, bw: f64, fs: f64) -> Self {
        let r = (-std::f64::consts::PI * bw / fs).exp();
        let theta = 2.0 * std::f64::consts::PI * freq / fs;
        Self {
            a1: 2.0 * r * theta.cos(),
            a2: -r * r,
            y1: 0.0,
            y2: 0.0,
        }
    }

    fn step(&mut self, x: f64) -> f64 {
        let y = x + self.a1 * self.y1 + self.a2 * self.y2;
        self.y2 = self.y1;
        self.y1 = y;
        y
    }
}

/// xorshift64*: small, fast, deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::speech_like;

    #[test]
    fn is_deterministic_speech_with_pauses() {
        let a = speech_like(10.0, 16_000, 7);
        assert_eq!(a.samples.len(), 160_000);
        assert_eq!(a, speech_like(10.0, 16_000, 7));
        let peak = a.samples.iter().fold(0f32, |m, s| m.max(s.abs()));
        assert!((peak - 0.708).abs() < 0.01, "{peak}");
        // Pauses: some 20 ms frames are near the noise floor, most are not.
        let frames: Vec<f32> = a
            .samples
            .chunks(320)
            .map(|c| c.iter().map(|s| s * s).sum::<f32>() / c.len() as f32)
            .collect();
        let quiet = frames.iter().filter(|&&e| e < 1e-4).count();
        assert!(
            quiet > frames.len() / 10 && quiet < frames.len() / 2,
            "{quiet} of {}",
            frames.len()
        );
    }
}
