//! Decoded audio as the encoders take it: mono `f32` samples in `[-1, 1]` at
//! one sample rate, plus the few operations every profile needs (resampling,
//! cutting into parts at quiet points, 16-bit export for external encoders).
//! [`PcmSource`] is audio an encoder reads in pieces: decoded already, or
//! decoded while the encoder reads it.
//!
//! Voice notes are speech from one microphone, and every output profile is
//! mono, so channels are mixed down as soon as audio is decoded: it halves the
//! memory and the work of everything after.

use std::ops::Range;

use super::EncodeError;

/// Mono audio.
#[derive(Debug, Clone, PartialEq)]
pub struct Pcm {
    /// Samples per second.
    pub rate: u32,
    /// Samples, nominally in `[-1, 1]`.
    pub samples: Vec<f32>,
}

impl Pcm {
    pub fn new(rate: u32, samples: Vec<f32>) -> Self {
        Self { rate, samples }
    }

    /// Duration in milliseconds, rounded to the nearest.
    pub fn duration_ms(&self) -> u64 {
        samples_to_ms(self.samples.len() as u64, self.rate)
    }

    /// The same audio at `rate` samples per second.
    pub fn resampled(&self, rate: u32) -> Pcm {
        Pcm {
            rate,
            samples: resample(&self.samples, self.rate, rate),
        }
    }

    /// Samples `range` as their own clip.
    pub fn slice(&self, range: Range<usize>) -> Pcm {
        Pcm {
            rate: self.rate,
            samples: self.samples[range].to_vec(),
        }
    }

    /// Signed 16-bit little-endian samples (clipped), the raw format external
    /// encoders read from a pipe.
    pub fn to_s16le(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.samples.len() * 2);
        for &s in &self.samples {
            out.extend_from_slice(&to_i16(s).to_le_bytes());
        }
        out
    }
}

/// Mono audio an encoder reads in pieces, in order: [`Pcm`] already
/// decoded, or a stream decoded as it is read (Opus), so that an encoder
/// in another process works on the start while the rest is decoded.
pub trait PcmSource {
    /// Samples per second.
    fn rate(&self) -> u32;
    /// How many samples it gives in all.
    fn sample_count(&self) -> usize;
    /// Hand the samples to `sink` piece by piece, in order (once: a stream
    /// decoded as it is read has nothing left after); stop early, without
    /// error, when `sink` returns `false`.
    fn pour(&mut self, sink: &mut dyn FnMut(&[f32]) -> bool) -> Result<(), EncodeError>;
    /// All of it as one [`Pcm`]; empty audio is [`EncodeError::NoAudio`].
    fn into_pcm(mut self: Box<Self>) -> Result<Pcm, EncodeError> {
        let mut samples = Vec::with_capacity(self.sample_count());
        self.pour(&mut |piece| {
            samples.extend_from_slice(piece);
            true
        })?;
        if samples.is_empty() {
            return Err(EncodeError::NoAudio);
        }
        Ok(Pcm::new(self.rate(), samples))
    }
}

/// Samples handed over at a time from decoded audio: 85 ms at 48 kHz.
const PIECE: usize = 4096;

impl PcmSource for &Pcm {
    fn rate(&self) -> u32 {
        self.rate
    }

    fn sample_count(&self) -> usize {
        self.samples.len()
    }

    fn pour(&mut self, sink: &mut dyn FnMut(&[f32]) -> bool) -> Result<(), EncodeError> {
        let all: &[f32] = &self.samples;
        for piece in all.chunks(PIECE) {
            if !sink(piece) {
                break;
            }
        }
        Ok(())
    }
}

impl PcmSource for Pcm {
    fn rate(&self) -> u32 {
        self.rate
    }

    fn sample_count(&self) -> usize {
        self.samples.len()
    }

    fn pour(&mut self, sink: &mut dyn FnMut(&[f32]) -> bool) -> Result<(), EncodeError> {
        let mut all: &Pcm = self;
        all.pour(sink)
    }

    fn into_pcm(self: Box<Self>) -> Result<Pcm, EncodeError> {
        if self.samples.is_empty() {
            return Err(EncodeError::NoAudio);
        }
        Ok(*self)
    }
}

/// `samples` at `rate` in milliseconds, rounded to the nearest.
pub fn samples_to_ms(samples: u64, rate: u32) -> u64 {
    if rate == 0 {
        return 0;
    }
    (samples * 1000 + u64::from(rate) / 2) / u64::from(rate)
}

/// A sample as 16-bit, clipped to the range.
pub fn to_i16(s: f32) -> i16 {
    // `as` saturates and maps NaN to 0, which is what clipping wants.
    (s * 32768.0).round().clamp(-32768.0, 32767.0) as i16
}

/// Mix interleaved `channels`-channel samples down to mono (the mean).
pub fn downmix_interleaved(interleaved: &[f32], channels: usize, out: &mut Vec<f32>) {
    match channels {
        0 => {}
        1 => out.extend_from_slice(interleaved),
        n => {
            let scale = 1.0 / n as f32;
            out.extend(
                interleaved
                    .chunks_exact(n)
                    .map(|frame| frame.iter().sum::<f32>() * scale),
            );
        }
    }
}

// ----------------------------------------------------------------- resampling

/// Zero crossings of the sinc kernel on each side: 12 gives a stop band
/// around -75 dB with the Blackman window, far below what a voice note's
/// microphone noise floor shows.
const ZERO_CROSSINGS: f64 = 12.0;

/// Most distinct filter phases kept. Exact for every common pair of rates
/// (44.1 → 48 kHz needs 160); odd ratios use the nearest of this many phases,
/// an error under 1/2000 of a sample.
const MAX_PHASES: usize = 1024;

/// Band-limited (windowed-sinc, polyphase) resampling from `from` to `to`
/// samples per second. Downsampling filters at 94 % of the new Nyquist
/// frequency, so nothing folds back as aliasing.
pub fn resample(x: &[f32], from: u32, to: u32) -> Vec<f32> {
    if from == to || x.is_empty() || from == 0 || to == 0 {
        return x.to_vec();
    }
    let g = gcd(u64::from(from), u64::from(to));
    // Output sample n sits at input position n * step / phases.
    let (phases, step) = (u64::from(to) / g, u64::from(from) / g);
    let table_phases = (phases as usize).min(MAX_PHASES);
    // Cut-off in cycles per input sample.
    let fc = 0.5 * (f64::from(to) / f64::from(from)).min(1.0) * 0.94;
    let half = (ZERO_CROSSINGS / (2.0 * fc)).ceil() as usize;
    let taps = 2 * half;
    let mut table = vec![0f32; table_phases * taps];
    for (p, row) in table.chunks_exact_mut(taps).enumerate() {
        let frac = p as f64 / table_phases as f64;
        let mut sum = 0.0;
        let mut kernel = Vec::with_capacity(taps);
        for k in 0..taps {
            // Tap k weighs input i + k - (half - 1) for output at i + frac.
            let t = k as f64 - (half as f64 - 1.0) - frac;
            let v = windowed_sinc(t, fc, half as f64);
            sum += v;
            kernel.push(v);
        }
        // Unit gain at DC for every phase, so no phase-dependent ripple.
        for (dst, v) in row.iter_mut().zip(kernel) {
            *dst = (v / sum) as f32;
        }
    }

    let out_len = (x.len() as u64 * phases).div_ceil(step) as usize;
    let mut out = Vec::with_capacity(out_len);
    let mut window = vec![0f32; taps];
    for n in 0..out_len as u64 {
        let pos = n * step;
        let i = (pos / phases) as isize;
        let p = if table_phases as u64 == phases {
            (pos % phases) as usize
        } else {
            (((pos % phases) * table_phases as u64 + phases / 2) / phases) as usize
        };
        // Rounding may land on the next whole sample: phase 0 of i + 1.
        let (i, p) = if p == table_phases {
            (i + 1, 0)
        } else {
            (i, p)
        };
        let row = &table[p * taps..(p + 1) * taps];
        let start = i - (half as isize - 1);
        let acc = if start >= 0 && (start as usize + taps) <= x.len() {
            dot(&x[start as usize..start as usize + taps], row)
        } else {
            // Near the edges: zeros outside the signal.
            for (k, w) in window.iter_mut().enumerate() {
                let j = start + k as isize;
                *w = if j >= 0 && (j as usize) < x.len() {
                    x[j as usize]
                } else {
                    0.0
                };
            }
            dot(&window, row)
        };
        out.push(acc);
    }
    out
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Four accumulators let the compiler vectorise the loop.
    let mut acc = [0f32; 4];
    let chunks = a.len() / 4 * 4;
    for (ca, cb) in a[..chunks].chunks_exact(4).zip(b[..chunks].chunks_exact(4)) {
        for j in 0..4 {
            acc[j] += ca[j] * cb[j];
        }
    }
    let mut sum = acc[0] + acc[1] + acc[2] + acc[3];
    for j in chunks..a.len() {
        sum += a[j] * b[j];
    }
    sum
}

fn windowed_sinc(t: f64, fc: f64, half: f64) -> f64 {
    if t.abs() >= half {
        return 0.0;
    }
    let x = 2.0 * fc * t;
    let sinc = if x.abs() < 1e-12 {
        1.0
    } else {
        (std::f64::consts::PI * x).sin() / (std::f64::consts::PI * x)
    };
    // Blackman window over [-half, half].
    let u = std::f64::consts::PI * t / half;
    let w = 0.42 + 0.5 * u.cos() + 0.08 * (2.0 * u).cos();
    2.0 * fc * sinc * w
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

// --------------------------------------------------------------- splitting

/// Where to cut audio of `len` samples at `rate` into the fewest parts of at
/// most `max_part` samples each: the sample ranges of the parts.
///
/// Parts are made about equal (a 130 s note under a 60 s limit becomes three
/// parts of ~43 s, not 60 + 60 + 10), and each cut moves to the quietest
/// 20 ms near its ideal place — within what keeps every part under the
/// limit — so a cut falls in a pause between words rather than inside one.
pub fn split_points(samples: &[f32], rate: u32, max_part: usize) -> Vec<Range<usize>> {
    let len = samples.len();
    if max_part == 0 || len <= max_part {
        return std::iter::once(0..len).collect();
    }
    let parts = len.div_ceil(max_part);
    let frame = (rate as usize / 50).max(1);
    let mut cuts = Vec::with_capacity(parts + 1);
    cuts.push(0usize);
    for k in 1..parts {
        let prev = *cuts.last().unwrap_or(&0);
        let ideal = len * k / parts;
        // The cut must leave this part ≤ max_part and leave the rest
        // coverable by the remaining parts.
        let hi = (prev + max_part).min(len);
        let lo = len.saturating_sub(max_part * (parts - k)).max(prev + 1);
        // Search ±3 s around the ideal point inside [lo, hi].
        let reach = rate as usize * 3;
        let from = ideal.saturating_sub(reach).max(lo);
        let to = (ideal + reach).min(hi);
        let cut = if from >= to {
            ideal.clamp(lo, hi)
        } else {
            quietest_frame(samples, from, to, frame)
        };
        cuts.push(cut);
    }
    cuts.push(len);
    cuts.windows(2).map(|w| w[0]..w[1]).collect()
}

/// The start of the quietest `frame`-sample window in `[from, to)`, stepping
/// half a frame; ties go to the one nearest the middle.
fn quietest_frame(samples: &[f32], from: usize, to: usize, frame: usize) -> usize {
    let mid = from + (to - from) / 2;
    let step = (frame / 2).max(1);
    let mut best = (f32::INFINITY, usize::MAX, mid);
    let mut at = from;
    while at < to {
        let end = (at + frame).min(samples.len());
        let energy: f32 = samples[at..end].iter().map(|s| s * s).sum();
        let dist = at.abs_diff(mid);
        if energy < best.0 || (energy == best.0 && dist < best.1) {
            best = (energy, dist, at);
        }
        at += step;
    }
    // Cut in the middle of the quiet frame.
    (best.2 + frame / 2).clamp(from, to)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, freq: f32, seconds: f32) -> Vec<f32> {
        (0..(rate as f32 * seconds) as usize)
            .map(|i| 0.5 * (2.0 * std::f32::consts::PI * freq * i as f32 / rate as f32).sin())
            .collect()
    }

    fn rms(x: &[f32]) -> f32 {
        (x.iter().map(|s| s * s).sum::<f32>() / x.len() as f32).sqrt()
    }

    #[test]
    fn resampling_keeps_duration_and_tones_in_band() {
        for (from, to) in [
            (44_100, 48_000),
            (48_000, 8_000),
            (8_000, 48_000),
            (48_000, 16_000),
        ] {
            let x = sine(from, 440.0, 1.0);
            let y = resample(&x, from, to);
            assert!(
                (y.len() as i64 - to as i64).abs() <= 1,
                "{from}->{to}: {}",
                y.len()
            );
            // Away from the edges a 440 Hz tone keeps its level (0.5/√2).
            let mid = &y[y.len() / 4..3 * y.len() / 4];
            assert!(
                (rms(mid) - 0.3536).abs() < 0.01,
                "{from}->{to}: rms {}",
                rms(mid)
            );
        }
    }

    #[test]
    fn downsampling_removes_what_the_new_rate_cannot_hold() {
        // 6 kHz does not exist at 8 kHz (Nyquist 4 kHz): it must vanish, not
        // fold back to 2 kHz.
        let y = resample(&sine(48_000, 6_000.0, 1.0), 48_000, 8_000);
        assert!(rms(&y[1000..7000]) < 0.001, "rms {}", rms(&y[1000..7000]));
    }

    #[test]
    fn odd_ratios_use_quantised_phases() {
        let x = sine(47_999, 300.0, 0.5);
        let y = resample(&x, 47_999, 48_000);
        assert!((y.len() as i64 - 24_000).abs() <= 1);
        assert!((rms(&y[6000..18000]) - 0.3536).abs() < 0.01);
    }

    #[test]
    fn splits_into_equal_parts_at_pauses() {
        let rate = 1000;
        // 130 s of "speech" (constant level) with a silent 100 ms every 5 s.
        let mut x = vec![0.5f32; 130 * rate];
        for s in (5..130).step_by(5) {
            x[s * rate - 50..s * rate + 50].fill(0.0);
        }
        let parts = split_points(&x, rate as u32, 60 * rate);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].start, 0);
        assert_eq!(parts[2].end, x.len());
        for w in parts.windows(2) {
            assert_eq!(w[0].end, w[1].start);
        }
        for p in &parts {
            assert!(p.len() <= 60 * rate, "{p:?}");
            // Each cut sits in a silent gap.
            if p.end != x.len() {
                assert_eq!(x[p.end], 0.0, "cut at {} is not in a pause", p.end);
            }
        }
    }

    #[test]
    fn a_limit_filled_exactly_still_splits() {
        let x = vec![0.1f32; 300];
        let parts = split_points(&x, 1, 60);
        assert_eq!(parts.len(), 5);
        assert!(parts.iter().all(|p| p.len() == 60), "{parts:?}");
        assert_eq!(split_points(&x, 1, 300), vec![0..300]);
    }
}
