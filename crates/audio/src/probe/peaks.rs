//! Waveform peaks for the agent's voice-note player.
//!
//! Decoded samples are folded, as they come, into the peak of each 10 ms
//! block; at the end the blocks are grouped into the requested number of
//! equal slices. Memory is one float per 10 ms (30 000 for 5 minutes) and
//! the total length need not be known in advance.

#[derive(Debug, Default)]
pub(crate) struct Envelope {
    channels: usize,
    block_frames: usize,
    current: f32,
    in_block: usize,
    blocks: Vec<f32>,
}

impl Envelope {
    /// Set the layout of the samples that follow.
    pub fn start(&mut self, sample_rate: u32, channels: usize) {
        self.channels = channels.max(1);
        self.block_frames = usize::try_from(sample_rate / 100).unwrap_or(1).max(1);
    }

    /// Interleaved samples, full scale ±1.0.
    pub fn push(&mut self, interleaved: &[f32]) {
        if self.block_frames == 0 {
            self.start(48_000, 1);
        }
        for frame in interleaved.chunks(self.channels) {
            for &s in frame {
                // `>` is false for NaN, so a NaN sample is ignored.
                let a = s.abs();
                if a > self.current {
                    self.current = a;
                }
            }
            self.in_block += 1;
            if self.in_block == self.block_frames {
                self.blocks.push(self.current);
                self.current = 0.0;
                self.in_block = 0;
            }
        }
    }

    /// `n` peaks, 0–255, of equal slices of what was pushed (all 0 when
    /// nothing was).
    pub fn finish(mut self, n: usize) -> Vec<u8> {
        if self.in_block > 0 {
            self.blocks.push(self.current);
        }
        let len = self.blocks.len();
        if len == 0 || n == 0 {
            return vec![0; n];
        }
        (0..n)
            .map(|i| {
                let from = i * len / n;
                // With fewer blocks than slices a block serves several.
                let to = ((i + 1) * len / n).max(from + 1).min(len);
                let peak = self.blocks[from..to].iter().fold(0f32, |m, &b| m.max(b));
                (peak.min(1.0) * 255.0).round() as u8
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Envelope;

    #[test]
    fn peaks_follow_the_loudness_of_each_slice() {
        let mut e = Envelope::default();
        e.start(1000, 2);
        // 1 s of stereo at 1 kHz: silent first half, the right channel at
        // half scale in the second.
        let mut samples = vec![0f32; 1000];
        samples.extend((0..500).flat_map(|_| [0.0, -0.5]));
        e.push(&samples);
        let peaks = e.finish(4);
        assert_eq!(peaks, vec![0, 0, 128, 128]);
    }

    #[test]
    fn fewer_blocks_than_peaks_and_nothing_at_all() {
        let mut e = Envelope::default();
        e.start(100, 1);
        e.push(&[1.0, 2.0]);
        assert_eq!(e.finish(3), vec![255, 255, 255]);
        assert_eq!(Envelope::default().finish(2), vec![0, 0]);
    }
}
