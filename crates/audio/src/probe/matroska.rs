//! A WebM/Matroska demuxer for audio: the tracks and the frames of the first
//! audio track, with their DiscardPadding.
//!
//! Only what a voice note needs is read; everything else is skipped by its
//! size. Browser recordings are written as live streams: the Segment and
//! every Cluster have an unknown size, there is no Duration and no Cues, so
//! an unknown-sized Cluster ends where the next top-level element starts.
//! Every step moves forward through the input, so parsing is linear in its
//! size; every size is checked against its parent before use.

use super::{Container, MAX_PACKETS, ProbeError, VideoTrack};

// Element ids (Matroska specification, RFC 9559).
const EBML: u32 = 0x1A45_DFA3;
const DOC_TYPE: u32 = 0x4282;
const SEGMENT: u32 = 0x1853_8067;
const SEEK_HEAD: u32 = 0x114D_9B74;
const INFO: u32 = 0x1549_A966;
const TIMESTAMP_SCALE: u32 = 0x2A_D7B1;
const TRACKS: u32 = 0x1654_AE6B;
const TRACK_ENTRY: u32 = 0xAE;
const TRACK_NUMBER: u32 = 0xD7;
const TRACK_TYPE: u32 = 0x83;
const CODEC_ID: u32 = 0x86;
const CODEC_PRIVATE: u32 = 0x63A2;
const CODEC_DELAY: u32 = 0x56AA;
const CONTENT_ENCODINGS: u32 = 0x6D80;
const AUDIO: u32 = 0xE1;
const SAMPLING_FREQUENCY: u32 = 0xB5;
const CHANNELS: u32 = 0x9F;
const VIDEO: u32 = 0xE0;
const PIXEL_WIDTH: u32 = 0xB0;
const PIXEL_HEIGHT: u32 = 0xBA;
const CLUSTER: u32 = 0x1F43_B675;
const CLUSTER_TIMESTAMP: u32 = 0xE7;
const SIMPLE_BLOCK: u32 = 0xA3;
const BLOCK_GROUP: u32 = 0xA0;
const BLOCK: u32 = 0xA1;
const DISCARD_PADDING: u32 = 0x75A2;
const CUES: u32 = 0x1C53_BB6B;
const CHAPTERS: u32 = 0x1043_A770;
const TAGS: u32 = 0x1254_C367;
const ATTACHMENTS: u32 = 0x1941_A469;

const TRACK_TYPE_VIDEO: u64 = 1;
const TRACK_TYPE_AUDIO: u64 = 2;

/// A parsed file: its tracks and the frames of its first audio track.
#[derive(Debug)]
pub(crate) struct Matroska<'a> {
    pub container: Container,
    pub tracks: Vec<Track<'a>>,
    /// Index into `tracks` of the first audio track.
    pub audio: Option<usize>,
    /// The audio track's frames, in file order.
    pub frames: Vec<Frame<'a>>,
}

#[derive(Debug, Default)]
pub(crate) struct Track<'a> {
    pub number: u64,
    pub kind: u64,
    pub codec_id: String,
    pub codec_private: Option<&'a [u8]>,
    /// CodecDelay in nanoseconds (for Opus: the pre-skip).
    pub codec_delay_ns: u64,
    pub sample_rate: Option<f64>,
    pub channels: Option<u64>,
    pub width: u64,
    pub height: u64,
    /// The track's frames are compressed or encrypted (ContentEncodings).
    pub encoded: bool,
}

/// One frame (a codec packet) of the audio track.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Frame<'a> {
    pub data: &'a [u8],
    /// DiscardPadding of the block the frame ends, in nanoseconds (0 when
    /// absent). Only the last frame's is meaningful for audio.
    pub discard_padding_ns: i64,
}

impl Matroska<'_> {
    /// The audio track.
    pub fn audio_track(&self) -> Option<&Track<'_>> {
        self.audio.and_then(|i| self.tracks.get(i))
    }

    /// Video tracks, for the probe's report.
    pub fn video_tracks(&self) -> Vec<VideoTrack> {
        self.tracks
            .iter()
            .filter(|t| t.kind == TRACK_TYPE_VIDEO)
            .map(|t| VideoTrack {
                codec: t.codec_id.clone(),
                width: u32::try_from(t.width).unwrap_or(u32::MAX),
                height: u32::try_from(t.height).unwrap_or(u32::MAX),
            })
            .collect()
    }
}

/// An element header.
#[derive(Debug, Clone, Copy)]
struct Element {
    id: u32,
    /// Offset of the header.
    start: usize,
    /// Offset of the payload.
    data: usize,
    /// Offset just past the payload; `None` for an unknown size.
    end: Option<usize>,
}

struct Parser<'a> {
    data: &'a [u8],
    container: Container,
}

/// Parse a WebM/Matroska file.
pub(crate) fn parse(data: &[u8]) -> Result<Matroska<'_>, ProbeError> {
    let mut p = Parser {
        data,
        container: Container::Webm,
    };
    let len = data.len();
    let header = p.element(0, len)?;
    if header.id != EBML {
        return Err(p.corrupt("no EBML header"));
    }
    let header_end = p.known_end(&header)?;
    let mut doc_type = String::new();
    p.children(header.data, header_end, |p, el, end| {
        if el.id == DOC_TYPE {
            doc_type = p.string(el.data, end);
        }
        Ok(())
    })?;
    p.container = match doc_type.as_str() {
        "webm" => Container::Webm,
        "matroska" => Container::Matroska,
        other => {
            return Err(ProbeError::unsupported(format!(
                "EBML document type {other:?} (not WebM or Matroska)"
            )));
        }
    };

    // The Segment, after any Void elements.
    let mut pos = header_end;
    let segment = loop {
        if pos >= len {
            return Err(p.truncated("the file ends before the Segment"));
        }
        let el = p.element(pos, len)?;
        if el.id == SEGMENT {
            break el;
        }
        pos = p.known_end(&el)?;
    };
    let segment_end = segment.end.unwrap_or(len);

    let mut m = Matroska {
        container: p.container,
        tracks: Vec::new(),
        audio: None,
        frames: Vec::new(),
    };
    let mut tracks_seen = false;
    pos = segment.data;
    while pos < segment_end {
        let el = p.element(pos, segment_end)?;
        match el.id {
            CLUSTER => {
                if !tracks_seen {
                    return Err(p.corrupt(format!(
                        "a Cluster at byte {} comes before the Tracks",
                        el.start
                    )));
                }
                pos = p.cluster(&el, segment_end, &mut m)?;
            }
            TRACKS => {
                let end = p.known_end(&el)?;
                if tracks_seen {
                    return Err(p.corrupt("two Tracks elements"));
                }
                tracks_seen = true;
                p.tracks(el.data, end, &mut m)?;
                pos = end;
            }
            INFO => {
                // Only TimestampScale could matter, and only for block
                // timestamps, which the duration does not use (see
                // `OpusStream`); check it is sane all the same.
                let end = p.known_end(&el)?;
                p.children(el.data, end, |p, child, child_end| {
                    if child.id == TIMESTAMP_SCALE && p.uint(child.data, child_end)? == 0 {
                        return Err(p.corrupt("TimestampScale is 0"));
                    }
                    Ok(())
                })?;
                pos = end;
            }
            // A second EBML header after a live Segment starts a chained
            // file; only the first is read.
            EBML if segment.end.is_none() => break,
            _ => pos = p.known_end(&el)?,
        }
    }
    if !tracks_seen {
        return Err(p.truncated("no Tracks element"));
    }
    Ok(m)
}

impl<'a> Parser<'a> {
    fn corrupt(&self, detail: impl Into<String>) -> ProbeError {
        ProbeError::corrupt(self.container, detail)
    }

    fn truncated(&self, detail: impl Into<String>) -> ProbeError {
        ProbeError::truncated(self.container, detail)
    }

    /// A variable-size integer at `pos`, not reading at or past `limit`:
    /// (value without the length marker, encoded length, all value bits set).
    fn vint(&self, pos: usize, limit: usize) -> Result<(u64, usize, bool), ProbeError> {
        let first = *self
            .data
            .get(pos)
            .filter(|_| pos < limit)
            .ok_or_else(|| self.ends_inside(pos, limit))?;
        if first == 0 {
            return Err(self.corrupt(format!("invalid variable-size integer at byte {pos}")));
        }
        let len = first.leading_zeros() as usize + 1;
        let bytes = self.slice(pos, len, limit)?;
        // The length marker and the zeros before it are not part of the
        // value (a 16-bit shift: `len` can be 8).
        let mut value = u64::from(first) & (0xFFu64 >> len);
        for &b in &bytes[1..] {
            value = (value << 8) | u64::from(b);
        }
        let all_ones = value == (1u64 << (7 * len)) - 1;
        Ok((value, len, all_ones))
    }

    fn ends_inside(&self, pos: usize, limit: usize) -> ProbeError {
        if limit >= self.data.len() {
            self.truncated(format!("the file ends inside an element at byte {pos}"))
        } else {
            self.corrupt(format!("an element at byte {pos} overruns its parent"))
        }
    }

    /// `len` bytes at `pos`, all before `limit`.
    fn slice(&self, pos: usize, len: usize, limit: usize) -> Result<&'a [u8], ProbeError> {
        match pos.checked_add(len) {
            Some(end) if end <= limit && end <= self.data.len() => Ok(&self.data[pos..end]),
            _ => Err(self.ends_inside(pos, limit)),
        }
    }

    /// The element header at `pos`, inside a parent ending at `limit`.
    fn element(&self, pos: usize, limit: usize) -> Result<Element, ProbeError> {
        let first = *self
            .data
            .get(pos)
            .filter(|_| pos < limit)
            .ok_or_else(|| self.ends_inside(pos, limit))?;
        let id_len = first.leading_zeros() as usize + 1;
        if first == 0 || id_len > 4 {
            return Err(self.corrupt(format!("invalid element id at byte {pos}")));
        }
        let id = self
            .slice(pos, id_len, limit)?
            .iter()
            .fold(0u32, |id, &b| (id << 8) | u32::from(b));
        let (size, size_len, unknown) = self.vint(pos + id_len, limit)?;
        let data = pos + id_len + size_len;
        let end = if unknown {
            None
        } else {
            let end = usize::try_from(size)
                .ok()
                .and_then(|size| data.checked_add(size))
                .filter(|&end| end <= limit);
            match end {
                Some(end) => Some(end),
                None if limit >= self.data.len() => {
                    return Err(self.truncated(format!(
                        "element {id:#X} at byte {pos} is {size} bytes but the file ends {} bytes later",
                        self.data.len().saturating_sub(data)
                    )));
                }
                None => {
                    return Err(
                        self.corrupt(format!("element {id:#X} at byte {pos} overruns its parent"))
                    );
                }
            }
        };
        Ok(Element {
            id,
            start: pos,
            data,
            end,
        })
    }

    /// The end of an element that must have a known size.
    fn known_end(&self, el: &Element) -> Result<usize, ProbeError> {
        el.end.ok_or_else(|| {
            self.corrupt(format!(
                "element {:#X} at byte {} has an unknown size",
                el.id, el.start
            ))
        })
    }

    /// Visit the children of a known-size element.
    fn children(
        &self,
        mut pos: usize,
        end: usize,
        mut visit: impl FnMut(&Self, Element, usize) -> Result<(), ProbeError>,
    ) -> Result<(), ProbeError> {
        while pos < end {
            let el = self.element(pos, end)?;
            let el_end = self.known_end(&el)?;
            visit(self, el, el_end)?;
            pos = el_end;
        }
        Ok(())
    }

    fn uint(&self, pos: usize, end: usize) -> Result<u64, ProbeError> {
        let bytes = &self.data[pos..end];
        if bytes.len() > 8 {
            return Err(self.corrupt(format!(
                "unsigned integer of {} bytes at byte {pos}",
                bytes.len()
            )));
        }
        Ok(bytes.iter().fold(0u64, |v, &b| (v << 8) | u64::from(b)))
    }

    fn int(&self, pos: usize, end: usize) -> Result<i64, ProbeError> {
        let bytes = &self.data[pos..end];
        if bytes.len() > 8 {
            return Err(self.corrupt(format!(
                "signed integer of {} bytes at byte {pos}",
                bytes.len()
            )));
        }
        let Some(&first) = bytes.first() else {
            return Ok(0);
        };
        // Sign-extend from the first byte.
        let init: i64 = if first & 0x80 != 0 { -1 } else { 0 };
        Ok(bytes.iter().fold(init, |v, &b| (v << 8) | i64::from(b)))
    }

    fn float(&self, pos: usize, end: usize) -> Result<f64, ProbeError> {
        let bytes = &self.data[pos..end];
        match bytes.len() {
            0 => Ok(0.0),
            4 => Ok(f64::from(f32::from_be_bytes([
                bytes[0], bytes[1], bytes[2], bytes[3],
            ]))),
            8 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(bytes);
                Ok(f64::from_be_bytes(b))
            }
            n => Err(self.corrupt(format!("float of {n} bytes at byte {pos}"))),
        }
    }

    fn string(&self, pos: usize, end: usize) -> String {
        String::from_utf8_lossy(&self.data[pos..end])
            .trim_end_matches('\0')
            .to_owned()
    }

    fn tracks(&self, pos: usize, end: usize, m: &mut Matroska<'a>) -> Result<(), ProbeError> {
        self.children(pos, end, |p, el, el_end| {
            if el.id == TRACK_ENTRY {
                let track = p.track_entry(el.data, el_end)?;
                if track.kind == TRACK_TYPE_AUDIO && m.audio.is_none() {
                    m.audio = Some(m.tracks.len());
                }
                m.tracks.push(track);
            }
            Ok(())
        })
    }

    fn track_entry(&self, pos: usize, end: usize) -> Result<Track<'a>, ProbeError> {
        let mut t = Track::default();
        self.children(pos, end, |p, el, el_end| {
            match el.id {
                TRACK_NUMBER => t.number = p.uint(el.data, el_end)?,
                TRACK_TYPE => t.kind = p.uint(el.data, el_end)?,
                CODEC_ID => t.codec_id = p.string(el.data, el_end),
                CODEC_PRIVATE => t.codec_private = Some(&p.data[el.data..el_end]),
                CODEC_DELAY => t.codec_delay_ns = p.uint(el.data, el_end)?,
                CONTENT_ENCODINGS => t.encoded = true,
                AUDIO => p.children(el.data, el_end, |p, a, a_end| {
                    match a.id {
                        SAMPLING_FREQUENCY => t.sample_rate = Some(p.float(a.data, a_end)?),
                        CHANNELS => t.channels = Some(p.uint(a.data, a_end)?),
                        _ => {}
                    }
                    Ok(())
                })?,
                VIDEO => p.children(el.data, el_end, |p, v, v_end| {
                    match v.id {
                        PIXEL_WIDTH => t.width = p.uint(v.data, v_end)?,
                        PIXEL_HEIGHT => t.height = p.uint(v.data, v_end)?,
                        _ => {}
                    }
                    Ok(())
                })?,
                _ => {}
            }
            Ok(())
        })?;
        if t.number == 0 {
            return Err(self.corrupt(format!("track entry at byte {pos} has no TrackNumber")));
        }
        Ok(t)
    }

    /// Read a Cluster; returns where the next segment-level element starts.
    fn cluster(
        &self,
        el: &Element,
        segment_end: usize,
        m: &mut Matroska<'a>,
    ) -> Result<usize, ProbeError> {
        let (end, unknown_size) = match el.end {
            Some(end) => (end, false),
            None => (segment_end, true),
        };
        let mut timestamp_seen = false;
        let mut pos = el.data;
        while pos < end {
            let child = self.element(pos, end)?;
            if unknown_size && is_segment_level(child.id) {
                return Ok(pos);
            }
            let child_end = self.known_end(&child)?;
            match child.id {
                CLUSTER_TIMESTAMP => {
                    self.uint(child.data, child_end)?;
                    timestamp_seen = true;
                }
                SIMPLE_BLOCK | BLOCK_GROUP if !timestamp_seen => {
                    return Err(self.corrupt(format!(
                        "block at byte {} comes before its Cluster's Timestamp",
                        child.start
                    )));
                }
                SIMPLE_BLOCK => self.block(child.data, child_end, 0, m)?,
                BLOCK_GROUP => {
                    let mut block = None;
                    let mut discard = 0;
                    self.children(child.data, child_end, |p, g, g_end| {
                        match g.id {
                            BLOCK => block = Some((g.data, g_end)),
                            DISCARD_PADDING => discard = p.int(g.data, g_end)?,
                            _ => {}
                        }
                        Ok(())
                    })?;
                    let (b, b_end) = block.ok_or_else(|| {
                        self.corrupt(format!("BlockGroup at byte {} has no Block", child.start))
                    })?;
                    self.block(b, b_end, discard, m)?;
                }
                _ => {}
            }
            pos = child_end;
        }
        Ok(end)
    }

    /// A (Simple)Block's frames, kept when they belong to the audio track.
    fn block(
        &self,
        pos: usize,
        end: usize,
        discard_padding_ns: i64,
        m: &mut Matroska<'a>,
    ) -> Result<(), ProbeError> {
        let bad = |what: &str| self.corrupt(format!("block at byte {pos}: {what}"));
        let (track, track_len, _) = self.vint(pos, end).map_err(|_| bad("bad track number"))?;
        let Some(audio) = m.audio_track() else {
            return Ok(());
        };
        if track != audio.number {
            return Ok(());
        }
        let header = self
            .slice(pos + track_len, 3, end)
            .map_err(|_| bad("shorter than its header"))?;
        let flags = header[2];
        let mut at = pos + track_len + 3;
        let lacing = (flags >> 1) & 0x03;
        let mut sizes: Vec<usize> = Vec::new();
        if lacing != 0 {
            let count = usize::from(
                *self
                    .data
                    .get(at)
                    .filter(|_| at < end)
                    .ok_or_else(|| bad("no lace count"))?,
            ) + 1;
            at += 1;
            match lacing {
                // Xiph: each size as a run of 255s and a final byte < 255.
                1 => {
                    for _ in 0..count - 1 {
                        let mut size = 0usize;
                        loop {
                            let b = *self
                                .data
                                .get(at)
                                .filter(|_| at < end)
                                .ok_or_else(|| bad("lace sizes run past the block"))?;
                            at += 1;
                            size += usize::from(b);
                            if b != 255 {
                                break;
                            }
                        }
                        sizes.push(size);
                    }
                }
                // EBML: the first size, then signed differences.
                3 => {
                    let (first, len, _) =
                        self.vint(at, end).map_err(|_| bad("bad EBML lace size"))?;
                    at += len;
                    let mut size = i128::from(first);
                    sizes.push(usize::try_from(size).map_err(|_| bad("lace size too large"))?);
                    for _ in 1..count - 1 {
                        let (raw, len, _) =
                            self.vint(at, end).map_err(|_| bad("bad EBML lace size"))?;
                        at += len;
                        let bias = (1i128 << (7 * len - 1)) - 1;
                        size += i128::from(raw) - bias;
                        sizes.push(usize::try_from(size).map_err(|_| bad("negative lace size"))?);
                    }
                }
                // Fixed: equal sizes.
                _ => {
                    let rest = end.saturating_sub(at);
                    if !rest.is_multiple_of(count) {
                        return Err(bad("fixed lacing does not divide the block evenly"));
                    }
                    sizes = vec![rest / count; count - 1];
                }
            }
        }
        let laced: usize = sizes
            .iter()
            .try_fold(0usize, |sum, &s| sum.checked_add(s))
            .ok_or_else(|| bad("lace sizes overflow"))?;
        let rest = end
            .checked_sub(at)
            .and_then(|r| r.checked_sub(laced))
            .ok_or_else(|| bad("laced frames are larger than the block"))?;
        sizes.push(rest);
        let count = sizes.len();
        for (i, size) in sizes.into_iter().enumerate() {
            if m.frames.len() >= MAX_PACKETS {
                return Err(ProbeError::unsupported(format!(
                    "more than {MAX_PACKETS} audio packets"
                )));
            }
            m.frames.push(Frame {
                data: &self.data[at..at + size],
                discard_padding_ns: if i + 1 == count {
                    discard_padding_ns
                } else {
                    0
                },
            });
            at += size;
        }
        Ok(())
    }
}

/// Elements that end an unknown-sized Cluster.
fn is_segment_level(id: u32) -> bool {
    matches!(
        id,
        CLUSTER | CUES | TAGS | INFO | TRACKS | SEEK_HEAD | CHAPTERS | ATTACHMENTS | EBML | SEGMENT
    )
}
