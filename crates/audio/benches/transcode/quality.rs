//! How close a decoded encode is to its source, for speech: the measures
//! behind the choice of AAC coder (docs/adr/0010-faster-external-encodes.md).
//!
//! Only frames with speech in them count (within 30 dB of the loudest
//! frame), in 1024-sample Hann windows (21 ms at 48 kHz), hop 512:
//!
//! - **SNR** and **segmental SNR** (per frame, clamped to −10…35 dB): the
//!   waveform error; perceptual coders shape noise, so these undersell them;
//! - **fwSNRseg**: segmental SNR in 24 critical bands to 15.5 kHz, each
//!   weighted by the source's band magnitude^0.2 (Hu & Loizou, 2008), which
//!   follows listening tests of coded speech better than plain SNR;
//! - **LSD**: log-spectral distance to 8 kHz, in dB (floor 60 dB under the
//!   frame's peak), which spectral holes raise;
//! - **holes**: the share of spectral bins to 8 kHz within 30 dB of the
//!   frame's peak that come out 15 dB or more too weak (band-limited
//!   encoders at low rates zero whole bands), overall and in 4–8 kHz where
//!   sibilants are.

use std::f64::consts::PI;

/// The scores of one decoded encode against its source.
pub struct Scores {
    pub snr_db: f64,
    pub seg_snr_db: f64,
    pub fw_snr_seg_db: f64,
    pub lsd_db: f64,
    /// Per cent of the significant bins to 8 kHz.
    pub holes_pct: f64,
    /// Per cent of the significant bins in 4–8 kHz.
    pub holes_4_8k_pct: f64,
}

const FRAME: usize = 1024;
const HOP: usize = 512;

/// Critical band edges (Hz) up to 15.5 kHz.
const BANDS: [f64; 25] = [
    0., 100., 200., 300., 400., 510., 630., 770., 920., 1080., 1270., 1480., 1720., 2000., 2320.,
    2700., 3150., 3700., 4400., 5300., 6400., 7700., 9500., 12000., 15500.,
];

/// `decoded` against `source`, both mono at `rate`; `decoded` may lag or
/// lead by up to 2048 samples (codec delay), which is found first.
pub fn compare(source: &[f32], decoded: &[f32], rate: u32) -> Scores {
    let fs = f64::from(rate);
    let lag = best_lag(source, decoded, 2048);
    let at = |i: usize| -> f64 {
        let j = i as i64 + lag;
        if j >= 0 && (j as usize) < decoded.len() {
            f64::from(decoded[j as usize])
        } else {
            0.0
        }
    };
    let n = source.len();
    let (mut signal, mut noise) = (0.0, 0.0);
    for (i, &s) in source.iter().enumerate() {
        let s = f64::from(s);
        signal += s * s;
        noise += (at(i) - s).powi(2);
    }

    let window: Vec<f64> = (0..FRAME)
        .map(|i| 0.5 - 0.5 * (2.0 * PI * i as f64 / FRAME as f64).cos())
        .collect();
    let starts: Vec<usize> = (0..n.saturating_sub(FRAME) / HOP)
        .map(|k| k * HOP)
        .collect();
    let energy: Vec<f64> = starts
        .iter()
        .map(|&s| {
            source[s..s + FRAME]
                .iter()
                .map(|&x| f64::from(x).powi(2))
                .sum()
        })
        .collect();
    let loudest = energy.iter().cloned().fold(0.0, f64::max);
    let bin = |f: f64| ((f / fs * FRAME as f64).round() as usize).min(FRAME / 2);
    let top = bin(8000.0);
    let (mut seg, mut fw, mut lsd, mut frames) = (0.0, 0.0, 0.0, 0usize);
    let mut holes = [[0u64; 2]; 2];
    for (k, &start) in starts.iter().enumerate() {
        if energy[k] < loudest * 1e-3 {
            continue;
        }
        frames += 1;
        let x: Vec<f64> = source[start..start + FRAME]
            .iter()
            .map(|&v| f64::from(v))
            .collect();
        let y: Vec<f64> = (start..start + FRAME).map(at).collect();
        let err: f64 = x.iter().zip(&y).map(|(a, b)| (a - b).powi(2)).sum();
        seg += (10.0 * (energy[k] / err.max(1e-20)).log10()).clamp(-10.0, 35.0);

        let px = power(&x, &window);
        let py = power(&y, &window);
        let (mut num, mut den) = (0.0, 0.0);
        for edge in BANDS.windows(2) {
            let (lo, hi) = (bin(edge[0]), bin(edge[1]));
            if hi <= lo {
                continue;
            }
            let xb = px[lo..hi].iter().sum::<f64>().sqrt();
            let yb = py[lo..hi].iter().sum::<f64>().sqrt();
            let weight = xb.powf(0.2);
            let snr = 10.0 * (xb * xb / ((xb - yb) * (xb - yb)).max(1e-20)).log10();
            num += weight * snr.clamp(-10.0, 35.0);
            den += weight;
        }
        fw += num / den.max(1e-20);

        let peak = px[1..top].iter().cloned().fold(0.0, f64::max);
        let floor = peak * 1e-6;
        let mut sum = 0.0;
        for i in 1..top {
            sum += (10.0 * ((px[i] + floor) / (py[i] + floor)).log10()).powi(2);
            if px[i] > peak * 1e-3 {
                let high = usize::from(i as f64 * fs / FRAME as f64 >= 4000.0);
                holes[high][1] += 1;
                if py[i] < px[i] * 0.0316 {
                    holes[high][0] += 1;
                }
            }
        }
        lsd += (sum / (top - 1) as f64).sqrt();
    }
    let frames = frames.max(1) as f64;
    let pct = |h: u64, of: u64| 100.0 * h as f64 / of.max(1) as f64;
    Scores {
        snr_db: 10.0 * (signal / noise.max(1e-20)).log10(),
        seg_snr_db: seg / frames,
        fw_snr_seg_db: fw / frames,
        lsd_db: lsd / frames,
        holes_pct: pct(holes[0][0] + holes[1][0], holes[0][1] + holes[1][1]),
        holes_4_8k_pct: pct(holes[1][0], holes[1][1]),
    }
}

/// The lag (within ±`max`) at which `decoded` best matches `source`,
/// measured on 10 s from the middle.
fn best_lag(source: &[f32], decoded: &[f32], max: i64) -> i64 {
    let from = source.len() / 2;
    let to = (from + 480_000).min(source.len());
    let mut best = (f64::MIN, 0);
    for lag in -max..=max {
        let mut c = 0.0;
        for i in (from..to).step_by(4) {
            let j = i as i64 + lag;
            if j >= 0 && (j as usize) < decoded.len() {
                c += f64::from(source[i]) * f64::from(decoded[j as usize]);
            }
        }
        if c > best.0 {
            best = (c, lag);
        }
    }
    best.1
}

/// Power spectrum (bins 0…N/2) of one windowed frame.
fn power(x: &[f64], window: &[f64]) -> Vec<f64> {
    let mut re: Vec<f64> = x.iter().zip(window).map(|(a, w)| a * w).collect();
    let mut im = vec![0.0; re.len()];
    fft(&mut re, &mut im);
    (0..=re.len() / 2)
        .map(|k| re[k] * re[k] + im[k] * im[k])
        .collect()
}

/// In-place radix-2 FFT (the length a power of two).
fn fft(re: &mut [f64], im: &mut [f64]) {
    let n = re.len();
    let mut j = 0;
    for i in 1..n {
        let mut bit = n >> 1;
        while j & bit != 0 {
            j ^= bit;
            bit >>= 1;
        }
        j |= bit;
        if i < j {
            re.swap(i, j);
            im.swap(i, j);
        }
    }
    let mut len = 2;
    while len <= n {
        let half = len / 2;
        let step = -2.0 * PI / len as f64;
        for start in (0..n).step_by(len) {
            for k in 0..half {
                let (s, c) = (step * k as f64).sin_cos();
                let (a, b) = (start + k, start + k + half);
                let (vr, vi) = (re[b] * c - im[b] * s, re[b] * s + im[b] * c);
                re[b] = re[a] - vr;
                im[b] = im[a] - vi;
                re[a] += vr;
                im[a] += vi;
            }
        }
        len <<= 1;
    }
}
