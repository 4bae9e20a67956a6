//! The edit list of an MP4's audio track, which symphonia does not apply.
//!
//! AAC encoders prime the stream with ~1024 samples and pad the last frame;
//! Opus in MP4 carries its pre-skip the same way. The file says what to
//! play with an edit list (`moov/trak/edts/elst`): where in the track the
//! presentation starts (`media_time`, track timescale) and how long it lasts
//! (`segment_duration`, movie timescale). Without it the sample table alone
//! overstates the duration by 20–45 ms.
//!
//! Only the boxes on the way are read; every box's size is checked against
//! its parent and each step advances by at least a box header.

/// What to play of the audio track, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Edit {
    /// Track time skipped at the start.
    pub start_ms: u64,
    /// Length of the presentation; `None` when the edit runs to the end.
    pub duration_ms: Option<u64>,
}

/// The first audio track's edit, when the file has one.
pub(crate) fn audio_edit(data: &[u8]) -> Option<Edit> {
    let moov = boxes(data).find(|(kind, _)| kind == b"moov")?.1;
    let movie_scale = boxes(moov)
        .find(|(kind, _)| kind == b"mvhd")
        .and_then(|(_, mvhd)| timescale(mvhd, 12, 20))?;
    boxes(moov)
        .filter(|(kind, _)| kind == b"trak")
        .find_map(|(_, trak)| {
            let mdia = child(trak, b"mdia")?;
            let handler = child(mdia, b"hdlr")?;
            if handler.get(8..12)? != b"soun" {
                return None;
            }
            let track_scale = timescale(child(mdia, b"mdhd")?, 12, 20)?;
            let elst = child(child(trak, b"edts")?, b"elst")?;
            first_edit(elst, movie_scale, track_scale)
        })
}

/// The first edit that plays media (not an empty edit, media_time −1).
fn first_edit(elst: &[u8], movie_scale: u64, track_scale: u64) -> Option<Edit> {
    let version = *elst.first()?;
    let count = u32::from_be_bytes(elst.get(4..8)?.try_into().ok()?);
    let entry_len = if version == 1 { 20 } else { 12 };
    let mut at = 8usize;
    for _ in 0..count {
        let entry = elst.get(at..at + entry_len)?;
        at += entry_len;
        let (segment, media_time) = if version == 1 {
            (
                u64::from_be_bytes(entry[0..8].try_into().ok()?),
                i64::from_be_bytes(entry[8..16].try_into().ok()?),
            )
        } else {
            (
                u64::from(u32::from_be_bytes(entry[0..4].try_into().ok()?)),
                i64::from(i32::from_be_bytes(entry[4..8].try_into().ok()?)),
            )
        };
        let Ok(media_time) = u64::try_from(media_time) else {
            continue;
        };
        return Some(Edit {
            start_ms: to_ms(media_time, track_scale),
            duration_ms: (segment > 0).then(|| to_ms(segment, movie_scale)),
        });
    }
    None
}

fn to_ms(units: u64, scale: u64) -> u64 {
    let ms = (u128::from(units) * 1000 + u128::from(scale) / 2) / u128::from(scale);
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// The timescale of an `mvhd`/`mdhd` (full box: version 0 at `v0`, 1 at
/// `v1`); `None` when 0.
fn timescale(full_box: &[u8], v0: usize, v1: usize) -> Option<u64> {
    let at = if *full_box.first()? == 1 { v1 } else { v0 };
    let scale = u32::from_be_bytes(full_box.get(at..at + 4)?.try_into().ok()?);
    (scale > 0).then_some(u64::from(scale))
}

fn child<'a>(parent: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    boxes(parent).find(|(k, _)| k == kind).map(|(_, body)| body)
}

/// The boxes directly inside `data`: (type, payload). Stops at the first
/// box that does not fit.
fn boxes(data: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        let header = data.get(pos..pos + 8)?;
        let size32 = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let kind = [header[4], header[5], header[6], header[7]];
        let (header_len, size) = match size32 {
            // To the end of the parent.
            0 => (8, data.len() - pos),
            // A 64-bit size follows.
            1 => {
                let large = data.get(pos + 8..pos + 16)?;
                let size = u64::from_be_bytes(large.try_into().ok()?);
                (16, usize::try_from(size).ok()?)
            }
            n => (8, usize::try_from(n).ok()?),
        };
        if size < header_len {
            return None;
        }
        let end = pos.checked_add(size).filter(|&end| end <= data.len())?;
        let body = &data[pos + header_len..end];
        pos = end;
        Some((kind, body))
    })
}

#[cfg(test)]
mod tests {
    use super::{Edit, audio_edit};

    fn bx(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut b = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        b.extend_from_slice(kind);
        b.extend_from_slice(body);
        b
    }

    fn full(version: u8, rest: &[u8]) -> Vec<u8> {
        let mut b = vec![version, 0, 0, 0];
        b.extend_from_slice(rest);
        b
    }

    #[test]
    fn reads_the_audio_tracks_edit_and_skips_empty_edits() {
        // mvhd v0: creation, modification, timescale 1000.
        let mvhd = bx(
            b"mvhd",
            &full(
                0,
                &[[0; 8].as_slice(), &1000u32.to_be_bytes(), &[0; 4]].concat(),
            ),
        );
        // mdhd v0: timescale 48 000.
        let mdhd = bx(
            b"mdhd",
            &full(
                0,
                &[[0; 8].as_slice(), &48_000u32.to_be_bytes(), &[0; 4]].concat(),
            ),
        );
        let hdlr = bx(
            b"hdlr",
            &full(0, &[[0; 4].as_slice(), b"soun", &[0; 12]].concat()),
        );
        // An empty edit, then 4 200 ms starting at 1 024 samples.
        let elst = bx(
            b"elst",
            &full(
                0,
                &[
                    2u32.to_be_bytes().as_slice(),
                    &100u32.to_be_bytes(),
                    &(-1i32).to_be_bytes(),
                    &[0, 1, 0, 0], // media rate 1.0
                    &4_200u32.to_be_bytes(),
                    &1_024i32.to_be_bytes(),
                    &[0, 1, 0, 0],
                ]
                .concat(),
            ),
        );
        let trak = bx(
            b"trak",
            &[bx(b"edts", &elst), bx(b"mdia", &[mdhd, hdlr].concat())].concat(),
        );
        let file = [
            bx(b"ftyp", b"M4A \0\0\0\0"),
            bx(b"moov", &[mvhd, trak].concat()),
        ]
        .concat();
        assert_eq!(
            audio_edit(&file),
            Some(Edit {
                start_ms: 21,
                duration_ms: Some(4_200),
            })
        );
        // Cut anywhere: no edit, no panic.
        for len in 0..file.len() {
            let _ = audio_edit(&file[..len]);
        }
    }
}
