//! An Ogg demuxer (RFC 3533) for the first audio stream: pages checked for
//! capture pattern, version, checksum and sequence, packets reassembled
//! across pages, granule positions kept per page. Then Opus (RFC 7845) or
//! Vorbis on top.

use std::borrow::Cow;

use super::opus::{OpusHead, OpusStream, packet_samples};
use super::{Codec, Container, MAX_PACKETS, ProbeError, Summary, samples_to_ms};

const C: Container = Container::Ogg;

const FLAG_CONTINUED: u8 = 0x01;
const FLAG_BOS: u8 = 0x02;
const FLAG_EOS: u8 = 0x04;

/// What the first packet of a logical stream says it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Opus,
    Vorbis,
    Other(&'static str),
    Video(&'static str),
    Unknown,
}

fn kind_of(first_packet: &[u8]) -> Kind {
    let starts = |m: &[u8]| first_packet.starts_with(m);
    if starts(b"OpusHead") {
        Kind::Opus
    } else if starts(b"\x01vorbis") {
        Kind::Vorbis
    } else if starts(b"\x7FFLAC") {
        Kind::Other("FLAC")
    } else if starts(b"Speex   ") {
        Kind::Other("Speex")
    } else if starts(b"\x80theora") {
        Kind::Video("Theora")
    } else {
        // Skeleton, Kate subtitles and the rest: neither audio nor video.
        Kind::Unknown
    }
}

/// One page of the chosen stream: its granule position (-1: no packet ends
/// on it) and how many packets had ended once it was read.
#[derive(Debug, Clone, Copy)]
struct PageMark {
    granule: i64,
    packets_done: usize,
}

/// The chosen logical stream.
#[derive(Debug)]
pub(crate) struct OggStream<'a> {
    kind: Kind,
    /// Every packet, headers included. Packets spanning pages are copied;
    /// the others borrow the input.
    packets: Vec<Cow<'a, [u8]>>,
    pages: Vec<PageMark>,
}

/// Read the pages of the first Opus or Vorbis stream.
pub(crate) fn parse(data: &[u8]) -> Result<OggStream<'_>, ProbeError> {
    let mut chosen: Option<u32> = None;
    let mut others: Vec<Kind> = Vec::new();
    let mut stream = OggStream {
        kind: Kind::Unknown,
        packets: Vec::new(),
        pages: Vec::new(),
    };
    let mut last_seq: Option<u32> = None;
    let mut partial: Option<Vec<u8>> = None;
    let mut pos = 0usize;
    while pos < data.len() {
        let page = Page::read(data, pos)?;
        pos = page.end;
        if page.flags & FLAG_BOS != 0 && chosen.is_none() {
            let first = page.first_segment_run(data);
            match kind_of(first) {
                k @ (Kind::Opus | Kind::Vorbis) => {
                    chosen = Some(page.serial);
                    stream.kind = k;
                }
                other => others.push(other),
            }
        }
        if chosen != Some(page.serial) {
            continue;
        }
        if let Some(prev) = last_seq
            && page.seq != prev.wrapping_add(1)
        {
            return Err(ProbeError::corrupt(
                C,
                format!(
                    "page {} follows page {prev} at byte {}: pages are missing",
                    page.seq, page.start
                ),
            ));
        }
        last_seq = Some(page.seq);
        let continued = page.flags & FLAG_CONTINUED != 0;
        if continued != partial.is_some() {
            return Err(ProbeError::corrupt(
                C,
                format!(
                    "page at byte {} {} a packet continued from the page before",
                    page.start,
                    if continued { "claims" } else { "lacks" }
                ),
            ));
        }
        let mut at = page.body;
        let mut start = at;
        for &lace in page.lacing(data) {
            at += usize::from(lace);
            if lace < 255 {
                let piece = &data[start..at];
                let packet = match partial.take() {
                    Some(mut p) => {
                        p.extend_from_slice(piece);
                        Cow::Owned(p)
                    }
                    None => Cow::Borrowed(piece),
                };
                if stream.packets.len() >= MAX_PACKETS {
                    return Err(ProbeError::unsupported(format!(
                        "more than {MAX_PACKETS} packets"
                    )));
                }
                stream.packets.push(packet);
                start = at;
            }
        }
        if start < at || page.lacing(data).last() == Some(&255) {
            // The last packet goes on in the next page.
            partial
                .get_or_insert_with(Vec::new)
                .extend_from_slice(&data[start..at]);
        }
        stream.pages.push(PageMark {
            granule: page.granule,
            packets_done: stream.packets.len(),
        });
        if page.flags & FLAG_EOS != 0 {
            // Anything after the end of the stream (a chained stream) is
            // not read.
            partial = None;
            break;
        }
    }
    if chosen.is_none() {
        return Err(
            if let Some(Kind::Video(codec)) = others.iter().find(|k| matches!(k, Kind::Video(_))) {
                ProbeError::NotAudio {
                    what: format!("an Ogg {codec} video with no audio"),
                }
            } else if let Some(Kind::Other(codec)) =
                others.iter().find(|k| matches!(k, Kind::Other(_)))
            {
                ProbeError::unsupported(format!("{codec} audio in Ogg"))
            } else {
                ProbeError::corrupt(C, "no Opus or Vorbis stream")
            },
        );
    }
    if partial.is_some() {
        return Err(ProbeError::truncated(
            C,
            "the file ends in the middle of a packet",
        ));
    }
    Ok(stream)
}

/// A page header, checked.
struct Page {
    start: usize,
    flags: u8,
    granule: i64,
    serial: u32,
    seq: u32,
    segments: usize,
    body: usize,
    end: usize,
}

impl Page {
    fn read(data: &[u8], pos: usize) -> Result<Page, ProbeError> {
        let rest = &data[pos..];
        if !rest.starts_with(b"OggS") {
            return Err(if b"OggS".starts_with(rest) {
                ProbeError::truncated(C, format!("the file ends inside a page at byte {pos}"))
            } else {
                ProbeError::corrupt(
                    C,
                    format!("no Ogg page where one should start, at byte {pos}"),
                )
            });
        }
        let cut =
            || ProbeError::truncated(C, format!("the file ends inside the page at byte {pos}"));
        let header = rest.get(..27).ok_or_else(cut)?;
        if header[4] != 0 {
            return Err(ProbeError::corrupt(
                C,
                format!("page at byte {pos} has version {}", header[4]),
            ));
        }
        let segments = usize::from(header[26]);
        let lacing = rest.get(27..27 + segments).ok_or_else(cut)?;
        let body_len: usize = lacing.iter().map(|&l| usize::from(l)).sum();
        let page_len = 27 + segments + body_len;
        let page = rest.get(..page_len).ok_or_else(cut)?;
        let stored = u32::from_le_bytes([header[22], header[23], header[24], header[25]]);
        if crc(page) != stored {
            return Err(ProbeError::corrupt(
                C,
                format!("page at byte {pos} fails its checksum"),
            ));
        }
        let mut granule = [0u8; 8];
        granule.copy_from_slice(&header[6..14]);
        Ok(Page {
            start: pos,
            flags: header[5],
            granule: i64::from_le_bytes(granule),
            serial: u32::from_le_bytes([header[14], header[15], header[16], header[17]]),
            seq: u32::from_le_bytes([header[18], header[19], header[20], header[21]]),
            segments,
            body: pos + 27 + segments,
            end: pos + page_len,
        })
    }

    fn lacing<'d>(&self, data: &'d [u8]) -> &'d [u8] {
        &data[self.start + 27..self.start + 27 + self.segments]
    }

    /// The bytes of the first packet that are on this page.
    fn first_segment_run<'d>(&self, data: &'d [u8]) -> &'d [u8] {
        let mut len = 0;
        for &lace in self.lacing(data) {
            len += usize::from(lace);
            if lace < 255 {
                break;
            }
        }
        &data[self.body..self.body + len]
    }
}

/// The Ogg checksum: CRC-32, polynomial 0x04C11DB7, not reflected, initial
/// value 0, over the page with its checksum field as zeros.
fn crc(page: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, entry) in t.iter_mut().enumerate() {
            let mut r = (i as u32) << 24;
            for _ in 0..8 {
                r = if r & 0x8000_0000 != 0 {
                    (r << 1) ^ 0x04C1_1DB7
                } else {
                    r << 1
                };
            }
            *entry = r;
        }
        t
    });
    page.iter().enumerate().fold(0u32, |crc, (i, &b)| {
        let b = if (22..26).contains(&i) { 0 } else { b };
        (crc << 8) ^ table[usize::from(((crc >> 24) as u8) ^ b)]
    })
}

/// The audio of an Ogg file.
pub(crate) enum OggAudio<'a> {
    Opus(OpusStream<'a>),
    /// Vorbis is measured from its headers and granule positions only.
    Vorbis(Summary),
}

impl<'a> OggAudio<'a> {
    pub fn from_stream(s: OggStream<'a>) -> Result<Self, ProbeError> {
        match s.kind {
            Kind::Opus => opus(s).map(OggAudio::Opus),
            _ => vorbis(&s).map(OggAudio::Vorbis),
        }
    }
}

/// The last granule position of the stream (of a page where a packet ends).
fn last_granule(pages: &[PageMark]) -> Option<u64> {
    pages
        .iter()
        .rev()
        .find(|p| p.granule >= 0)
        .and_then(|p| u64::try_from(p.granule).ok())
}

fn opus(s: OggStream<'_>) -> Result<OpusStream<'_>, ProbeError> {
    let corrupt = |d: String| ProbeError::corrupt(C, d);
    let mut packets = s.packets.into_iter();
    let head = OpusHead::parse(&packets.next().unwrap_or_default()).map_err(corrupt)?;
    match packets.next() {
        Some(tags) if tags.starts_with(b"OpusTags") => {}
        Some(_) => return Err(corrupt("the second packet is not OpusTags".into())),
        None => return Err(ProbeError::truncated(C, "the file ends before OpusTags")),
    }
    let audio: Vec<Cow<'_, [u8]>> = packets.collect();
    if audio.is_empty() {
        return Err(ProbeError::truncated(C, "the file has no audio packets"));
    }
    // `ends[i]`: samples once audio packet i has been decoded.
    let mut ends = Vec::with_capacity(audio.len());
    let mut total = 0u64;
    for (i, p) in audio.iter().enumerate() {
        let samples = packet_samples(p).map_err(|e| corrupt(format!("packet {i}: {e}")))?;
        total += u64::from(samples);
        ends.push(total);
    }
    // The stream may start at a granule position above 0 (a live stream cut
    // out of a longer one): the first page with a granule tells where.
    let start = s
        .pages
        .iter()
        .find(|p| p.granule >= 0 && p.packets_done > 2)
        .map(|p| {
            let samples_so_far = ends[p.packets_done - 3];
            u64::try_from(p.granule)
                .unwrap_or(0)
                .saturating_sub(samples_so_far)
        })
        .unwrap_or(0);
    // The last granule says how much of the last packet to play; it can
    // only trim. A granule past the packets' end is taken as no trimming.
    let end_trim = last_granule(&s.pages)
        .map(|g| total.saturating_sub(g.saturating_sub(start)))
        .unwrap_or(0);
    Ok(OpusStream {
        container: C,
        head,
        packets: audio,
        total_samples: total,
        end_trim,
    })
}

fn vorbis(s: &OggStream<'_>) -> Result<Summary, ProbeError> {
    let id = s.packets.first().map(|p| &p[..]).unwrap_or_default();
    if id.len() < 30 || !id.starts_with(b"\x01vorbis") || id[7..11] != [0, 0, 0, 0] {
        return Err(ProbeError::corrupt(C, "bad Vorbis identification header"));
    }
    let channels = u32::from(id[11]);
    let rate = u32::from_le_bytes([id[12], id[13], id[14], id[15]]);
    if channels == 0 || rate == 0 {
        return Err(ProbeError::corrupt(
            C,
            "Vorbis header with 0 channels or rate",
        ));
    }
    if s.packets.len() < 4 {
        return Err(ProbeError::truncated(C, "the file has no audio packets"));
    }
    let samples = last_granule(&s.pages).unwrap_or(0);
    let duration_ms = samples_to_ms(samples, u64::from(rate));
    let packets = &s.packets[3..];
    Ok(Summary {
        codec: Codec::Vorbis,
        sample_rate: rate,
        channels,
        duration_ms,
        packets: packets.len() as u64,
        audio_bytes: packets.iter().map(|p| p.len() as u64).sum(),
        video: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::crc;

    #[test]
    fn checksum_matches_libogg_pages() {
        // Pages written by the `ogg` crate, an independent implementation.
        let mut out = Vec::new();
        let mut w = ogg::PacketWriter::new(&mut out);
        w.write_packet(
            &b"OpusHead\x01\x01\x38\x01\x80\xbb\0\0\0\0\0"[..],
            7,
            ogg::PacketWriteEndInfo::EndPage,
            0,
        )
        .expect("writing to a Vec");
        w.write_packet(vec![0x5a; 600], 7, ogg::PacketWriteEndInfo::EndStream, 960)
            .expect("writing to a Vec");
        let mut pos = 0;
        let mut pages = 0;
        while pos < out.len() {
            let segments = usize::from(out[pos + 26]);
            let body: usize = out[pos + 27..pos + 27 + segments]
                .iter()
                .map(|&l| usize::from(l))
                .sum();
            let page = &out[pos..pos + 27 + segments + body];
            assert_eq!(crc(page).to_le_bytes(), page[22..26], "page {pages}");
            pos += page.len();
            pages += 1;
        }
        assert_eq!(pages, 2);
    }
}
