//! Test inputs written by code (WAV, WebM, Ogg/Opus) and an Ogg reader built
//! on the `ogg` crate, independent of the code under test.

#![allow(dead_code)]

/// A canonical 16-bit PCM WAV file.
pub fn wav_pcm16(rate: u32, channels: u16, samples: &[i16]) -> Vec<u8> {
    let data_len = (samples.len() * 2) as u32;
    let mut w = Vec::with_capacity(44 + samples.len() * 2);
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + data_len).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes()); // PCM
    w.extend_from_slice(&channels.to_le_bytes());
    w.extend_from_slice(&rate.to_le_bytes());
    w.extend_from_slice(&(rate * u32::from(channels) * 2).to_le_bytes());
    w.extend_from_slice(&(channels * 2).to_le_bytes());
    w.extend_from_slice(&16u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        w.extend_from_slice(&s.to_le_bytes());
    }
    w
}

/// An OpusHead for a mono stream.
pub fn opus_head(pre_skip: u16) -> Vec<u8> {
    let mut h = b"OpusHead\x01\x01".to_vec();
    h.extend_from_slice(&pre_skip.to_le_bytes());
    h.extend_from_slice(&48_000u32.to_le_bytes());
    h.extend_from_slice(&[0, 0, 0]);
    h
}

/// An Ogg/Opus file of `packets`, written with the `ogg` crate: headers on
/// their own pages, then 50 packets a page, the last page's granule the
/// packets' total.
pub fn opus_ogg(packets: &[Vec<u8>], pre_skip: u16) -> Vec<u8> {
    ogg_stream(&opus_head(pre_skip), packets, 0)
}

/// An Ogg stream with `head` as its first packet and granule positions
/// starting at `start` (a stream cut out of a longer one).
pub fn ogg_stream(head: &[u8], packets: &[Vec<u8>], start: u64) -> Vec<u8> {
    use ogg::{PacketWriteEndInfo as End, PacketWriter};
    let mut out = Vec::new();
    let mut w = PacketWriter::new(&mut out);
    let serial = 0x5EED;
    w.write_packet(head.to_vec(), serial, End::EndPage, 0)
        .expect("vec");
    w.write_packet(
        &b"OpusTags\x04\0\0\0test\0\0\0\0"[..],
        serial,
        End::EndPage,
        0,
    )
    .expect("vec");
    let mut granule = start;
    for (i, p) in packets.iter().enumerate() {
        granule += samples(p);
        let end = if i + 1 == packets.len() {
            End::EndStream
        } else if (i + 1) % 50 == 0 {
            End::EndPage
        } else {
            End::NormalPacket
        };
        w.write_packet(p.clone(), serial, end, granule)
            .expect("vec");
    }
    out
}

/// Samples of an Opus packet with a code-0 TOC (all the tests write).
fn samples(p: &[u8]) -> u64 {
    let config = usize::from(p[0] >> 3);
    let frame = match config {
        0..=11 => [480, 960, 1920, 2880][config % 4],
        12..=15 => [480, 960][config % 2],
        _ => [120, 240, 480, 960][config % 4],
    };
    let frames = match p[0] & 3 {
        0 => 1,
        1 | 2 => 2,
        _ => u64::from(p[1] & 0x3F),
    };
    frame * frames
}

/// What [`ebml_webm`] writes.
#[derive(Debug, Clone)]
pub struct WebmSpec {
    pub packets: Vec<Vec<u8>>,
    pub codec_id: &'static str,
    /// Write an OpusHead as CodecPrivate (with `pre_skip`).
    pub codec_private: bool,
    pub pre_skip: u16,
    pub codec_delay_ns: u64,
    /// DiscardPadding of the last block (0: a SimpleBlock).
    pub discard_padding_ns: i64,
    /// Xiph-lace this many first packets into one block (0 or 1: none).
    pub xiph_lace_first: usize,
    /// A video track instead of the audio one.
    pub video_only: bool,
    /// The EBML DocType.
    pub doc_type: &'static str,
}

impl Default for WebmSpec {
    fn default() -> Self {
        Self {
            packets: (0..20u8).map(|i| vec![31 << 3, i]).collect(),
            codec_id: "A_OPUS",
            codec_private: true,
            pre_skip: 312,
            codec_delay_ns: 0,
            discard_padding_ns: 0,
            xiph_lace_first: 0,
            video_only: false,
            doc_type: "webm",
        }
    }
}

/// An EBML element with an 8-byte size.
fn el(id: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut e = id.to_vec();
    e.push(0x01);
    e.extend_from_slice(&(payload.len() as u64).to_be_bytes()[1..]);
    e.extend_from_slice(payload);
    e
}

/// An EBML element of unknown size (live streams).
fn el_unknown(id: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut e = id.to_vec();
    e.extend_from_slice(&[0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
    e.extend_from_slice(payload);
    e
}

fn uint(id: &[u8], v: u64) -> Vec<u8> {
    el(id, &v.to_be_bytes())
}

/// A live-style WebM (unknown-sized Segment and Clusters, no Duration, no
/// Cues), as browsers record: one Cluster per 50 packets of the spec.
pub fn ebml_webm(spec: &WebmSpec) -> Vec<u8> {
    let header = el(
        &[0x1A, 0x45, 0xDF, 0xA3],
        &[
            uint(&[0x42, 0x86], 1),
            el(&[0x42, 0x82], spec.doc_type.as_bytes()),
            uint(&[0x42, 0x87], 4),
            uint(&[0x42, 0x85], 2),
        ]
        .concat(),
    );
    let info = el(
        &[0x15, 0x49, 0xA9, 0x66],
        &[
            uint(&[0x2A, 0xD7, 0xB1], 1_000_000),
            el(&[0x4D, 0x80], b"test"),
        ]
        .concat(),
    );
    let mut entry = vec![uint(&[0xD7], 1), uint(&[0x73, 0xC5], 7)];
    if spec.video_only {
        entry.push(uint(&[0x83], 1));
        entry.push(el(&[0x86], b"V_VP8"));
        entry.push(el(
            &[0xE0],
            &[uint(&[0xB0], 64), uint(&[0xBA], 48)].concat(),
        ));
    } else {
        entry.push(uint(&[0x83], 2));
        entry.push(el(&[0x86], spec.codec_id.as_bytes()));
        if spec.codec_private {
            entry.push(el(&[0x63, 0xA2], &opus_head(spec.pre_skip)));
        }
        if spec.codec_delay_ns > 0 {
            entry.push(uint(&[0x56, 0xAA], spec.codec_delay_ns));
        }
        entry.push(el(
            &[0xE1],
            &[el(&[0xB5], &48_000f64.to_be_bytes()), uint(&[0x9F], 1)].concat(),
        ));
    }
    let tracks = el(&[0x16, 0x54, 0xAE, 0x6B], &el(&[0xAE], &entry.concat()));

    let mut body = [info, tracks].concat();
    let block_head = |rel_ms: i16, flags: u8| {
        let mut b = vec![0x81];
        b.extend_from_slice(&rel_ms.to_be_bytes());
        b.push(flags);
        b
    };
    let mut i = 0;
    let mut cluster_start = 0usize;
    let mut cluster = Vec::new();
    let mut t_ms = 0i64;
    let n = spec.packets.len();
    while i < n {
        if cluster.is_empty() {
            cluster_start = t_ms as usize;
            cluster = uint(&[0xE7], cluster_start as u64);
        }
        let rel = (t_ms - cluster_start as i64) as i16;
        let laced = if i == 0 && spec.xiph_lace_first > 1 {
            spec.xiph_lace_first.min(n)
        } else {
            1
        };
        let frames = &spec.packets[i..i + laced];
        let mut block = if laced > 1 {
            let mut b = block_head(rel, 0x80 | 0x02);
            b.push((laced - 1) as u8);
            for f in &frames[..laced - 1] {
                let mut size = f.len();
                while size >= 255 {
                    b.push(255);
                    size -= 255;
                }
                b.push(size as u8);
            }
            b
        } else {
            block_head(rel, 0x80)
        };
        for f in frames {
            block.extend_from_slice(f);
            t_ms += (samples(f) / 48) as i64;
        }
        i += laced;
        let last = i == n;
        if last && spec.discard_padding_ns != 0 && !spec.video_only {
            let mut group = el(&[0xA1], &block);
            group.extend(el(&[0x75, 0xA2], &spec.discard_padding_ns.to_be_bytes()));
            cluster.extend(el(&[0xA0], &group));
        } else if !spec.video_only {
            cluster.extend(el(&[0xA3], &block));
        }
        if i % 50 == 0 || last {
            body.extend(el_unknown(&[0x1F, 0x43, 0xB6, 0x75], &cluster));
            cluster.clear();
        }
    }
    [header, el_unknown(&[0x18, 0x53, 0x80, 0x67], &body)].concat()
}

/// An Ogg file as the `ogg` crate reads it (checksums verified there), plus
/// the page headers.
#[derive(Debug)]
pub struct Ogg {
    pub packets: Vec<Vec<u8>>,
    /// (flags, granule, sequence) of each page.
    pub pages: Vec<(u8, i64, u32)>,
    pub page_offsets: Vec<usize>,
}

impl Ogg {
    pub fn read(bytes: &[u8]) -> Ogg {
        let mut reader = ogg::PacketReader::new(std::io::Cursor::new(bytes));
        let mut packets = Vec::new();
        while let Some(p) = reader.read_packet().expect("the ogg crate reads it") {
            packets.push(p.data);
        }
        let mut pages = Vec::new();
        let mut page_offsets = Vec::new();
        let mut pos = 0;
        while pos < bytes.len() {
            assert_eq!(&bytes[pos..pos + 4], b"OggS", "page at {pos}");
            let flags = bytes[pos + 5];
            let granule = i64::from_le_bytes(bytes[pos + 6..pos + 14].try_into().expect("8"));
            let seq = u32::from_le_bytes(bytes[pos + 18..pos + 22].try_into().expect("4"));
            let segments = usize::from(bytes[pos + 26]);
            let body: usize = bytes[pos + 27..pos + 27 + segments]
                .iter()
                .map(|&l| usize::from(l))
                .sum();
            pages.push((flags, granule, seq));
            page_offsets.push(pos);
            pos += 27 + segments + body;
        }
        Ogg {
            packets,
            pages,
            page_offsets,
        }
    }

    pub fn audio_packets(&self) -> Vec<Vec<u8>> {
        self.packets[2..].to_vec()
    }

    pub fn last_granule(&self) -> i64 {
        self.pages.last().map_or(-1, |p| p.1)
    }

    /// RFC 7845 page rules: OpusHead alone on a BOS page, OpusTags ending
    /// the second, EOS only on the last page, sequence numbers consecutive,
    /// granule positions never going down.
    pub fn assert_well_formed(&self) {
        let n = self.pages.len();
        assert!(n >= 3, "{:?}", self.pages);
        assert_eq!(self.pages[0], (0x02, 0, 0), "first page");
        assert_eq!(self.pages[1].1, 0, "OpusTags page granule");
        let mut last = 0;
        for (i, &(flags, granule, seq)) in self.pages.iter().enumerate() {
            assert_eq!(seq as usize, i, "sequence");
            assert_eq!(flags & 0x02 != 0, i == 0, "BOS on page {i}");
            assert_eq!(flags & 0x04 != 0, i + 1 == n, "EOS on page {i}");
            if granule >= 0 {
                assert!(granule >= last, "granule goes down on page {i}");
                last = granule;
            }
        }
    }
}
