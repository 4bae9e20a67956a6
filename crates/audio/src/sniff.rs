//! Which format a file is, from its first bytes (never from its name or
//! declared type): the containers agents send (voice notes, pictures,
//! common documents) and the files people attach by mistake, recognised by
//! their magic numbers, and which declared MIME types name which format.
//!
//! The gateway uses it to guard the door: it catches a file whose declared
//! type is wrong (a PNG sent as a voice note, a WebM recording labelled
//! `audio/ogg`), so nothing downstream trusts a false label. The probe uses
//! it to pick a parser, and to say "a PNG image" rather than "unknown
//! format" when the bytes are not audio at all.

/// Bytes needed to tell every format here apart.
pub const HEAD_LEN: usize = 16;

/// A format recognised by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Ogg,
    /// WebM and Matroska (one container; the DocType inside tells them
    /// apart, which the Matroska parser checks).
    Matroska,
    /// ISO base media: MP4, M4A, QuickTime.
    Mp4,
    /// ISO base media with a 3GPP brand.
    ThreeGp,
    Mp3,
    /// AAC in ADTS frames.
    Aac,
    Wav,
    Flac,
    Amr,
    AmrWb,
    Jpeg,
    Png,
    Gif,
    Webp,
    /// HEIC/HEIF pictures (ISO base media with an image brand).
    Heif,
    Avif,
    Tiff,
    Pdf,
    /// ZIP and the document formats built on it (OOXML, ODF, EPUB).
    Zip,
    Gzip,
    /// An ELF executable.
    Executable,
    /// AVI (RIFF) video.
    Avi,
    /// MPEG program stream video.
    MpegPs,
}

impl Format {
    /// How the format is named to clients: a name and its usual MIME type.
    pub fn describe(self) -> &'static str {
        match self {
            Format::Ogg => "Ogg (audio/ogg)",
            Format::Matroska => "WebM/Matroska (audio/webm)",
            Format::Mp4 => "MP4 (audio/mp4)",
            Format::ThreeGp => "3GP (audio/3gpp)",
            Format::Mp3 => "MP3 (audio/mpeg)",
            Format::Aac => "AAC (audio/aac)",
            Format::Wav => "WAV (audio/wav)",
            Format::Flac => "FLAC (audio/flac)",
            Format::Amr => "AMR (audio/amr)",
            Format::AmrWb => "AMR-WB (audio/amr-wb)",
            Format::Jpeg => "JPEG (image/jpeg)",
            Format::Png => "PNG (image/png)",
            Format::Gif => "GIF (image/gif)",
            Format::Webp => "WebP (image/webp)",
            Format::Heif => "HEIF (image/heic)",
            Format::Avif => "AVIF (image/avif)",
            Format::Tiff => "TIFF (image/tiff)",
            Format::Pdf => "PDF (application/pdf)",
            Format::Zip => "ZIP (application/zip)",
            Format::Gzip => "gzip (application/gzip)",
            Format::Executable => "ELF executable (application/x-executable)",
            Format::Avi => "AVI (video/x-msvideo)",
            Format::MpegPs => "MPEG program stream (video/mpeg)",
        }
    }

    /// What the file is, in a sentence ("a PNG image"), for formats that
    /// are not audio.
    pub fn what(self) -> &'static str {
        match self {
            Format::Jpeg => "a JPEG image",
            Format::Png => "a PNG image",
            Format::Gif => "a GIF image",
            Format::Webp => "a WebP image",
            Format::Heif | Format::Avif => "a HEIF/AVIF image",
            Format::Tiff => "a TIFF image",
            Format::Pdf => "a PDF document",
            Format::Zip => "a ZIP archive (or an office document)",
            Format::Gzip => "a gzip archive",
            Format::Executable => "an executable",
            Format::Avi => "AVI files",
            Format::MpegPs => "an MPEG program stream video",
            audio => audio.describe(),
        }
    }

    /// Whether the format carries sound a voice note can be made of.
    pub fn is_audio(self) -> bool {
        matches!(
            self,
            Format::Ogg
                | Format::Matroska
                | Format::Mp4
                | Format::ThreeGp
                | Format::Mp3
                | Format::Aac
                | Format::Wav
                | Format::Flac
                | Format::Amr
                | Format::AmrWb
        )
    }

    /// Whether the format is a picture.
    pub fn is_image(self) -> bool {
        matches!(
            self,
            Format::Jpeg | Format::Png | Format::Gif | Format::Webp | Format::Heif | Format::Avif
        )
    }
}

/// The format of a file starting with `head` (at least [`HEAD_LEN`] bytes
/// unless the file is shorter), if it is one of [`Format`].
pub fn sniff(head: &[u8]) -> Option<Format> {
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    if at(0, b"OggS") {
        return Some(Format::Ogg);
    }
    if at(0, &[0x1a, 0x45, 0xdf, 0xa3]) {
        return Some(Format::Matroska);
    }
    if at(4, b"ftyp") {
        return Some(iso_media_brand(head.get(8..12).unwrap_or_default()));
    }
    if at(0, b"RIFF") {
        return match head.get(8..12) {
            Some(b"WAVE") => Some(Format::Wav),
            Some(b"WEBP") => Some(Format::Webp),
            Some(b"AVI ") => Some(Format::Avi),
            _ => None,
        };
    }
    if at(0, b"#!AMR-WB\n") {
        return Some(Format::AmrWb);
    }
    if at(0, b"#!AMR\n") {
        return Some(Format::Amr);
    }
    if at(0, b"fLaC") {
        return Some(Format::Flac);
    }
    if at(0, b"ID3") {
        return Some(Format::Mp3);
    }
    if let Some(format) = mpeg_audio_frame(head) {
        return Some(format);
    }
    MAGIC
        .iter()
        .find(|(magic, _)| at(0, magic))
        .map(|&(_, format)| format)
}

/// The format of an ISO base media file by its major brand: pictures
/// (HEIF, AVIF), 3GPP, and MP4/M4A/QuickTime for every other brand.
fn iso_media_brand(brand: &[u8]) -> Format {
    match brand {
        b"heic" | b"heix" | b"hevc" | b"hevx" | b"heim" | b"heis" | b"mif1" | b"msf1" => {
            Format::Heif
        }
        b"avif" | b"avis" => Format::Avif,
        _ if brand.starts_with(b"hei") || brand.starts_with(b"mif") => Format::Heif,
        _ if brand.starts_with(b"avi") => Format::Avif,
        _ if brand.starts_with(b"3gp") || brand.starts_with(b"3g2") => Format::ThreeGp,
        _ => Format::Mp4,
    }
}

/// An MPEG audio frame header: 11 sync bits, then version and layer. Layer
/// bits 00 are ADTS (AAC); otherwise a valid header has a version that is
/// not reserved, a layer, a bit rate index that is not "bad" and a sample
/// rate index that is not reserved.
fn mpeg_audio_frame(head: &[u8]) -> Option<Format> {
    let [0xff, b1, rest @ ..] = head else {
        return None;
    };
    if b1 & 0xe0 != 0xe0 {
        return None;
    }
    if b1 & 0xf6 == 0xf0 {
        return Some(Format::Aac);
    }
    let &[b2, ..] = rest else {
        return None;
    };
    let version = (b1 >> 3) & 0x03;
    let layer = (b1 >> 1) & 0x03;
    let bitrate = b2 >> 4;
    let rate = (b2 >> 2) & 0x03;
    (version != 1 && layer != 0 && bitrate != 0x0f && rate != 0x03).then_some(Format::Mp3)
}

/// Magic numbers at offset 0 of the other formats, checked after the audio
/// ones.
const MAGIC: &[(&[u8], Format)] = &[
    (b"\xff\xd8\xff", Format::Jpeg),
    (b"\x89PNG\r\n\x1a\n", Format::Png),
    (b"GIF87a", Format::Gif),
    (b"GIF89a", Format::Gif),
    (b"%PDF-", Format::Pdf),
    (b"PK\x03\x04", Format::Zip),
    (b"PK\x05\x06", Format::Zip),
    (b"\x1f\x8b", Format::Gzip),
    (b"\x7fELF", Format::Executable),
    (b"II*\0", Format::Tiff),
    (b"MM\0*", Format::Tiff),
    (b"\x00\x00\x01\xba", Format::MpegPs),
];

/// UTF-8 text without control characters other than whitespace, judged on
/// the first 1 KiB (a character cut at that boundary is fine).
pub fn looks_like_text(data: &[u8]) -> bool {
    let head = &data[..data.len().min(1024)];
    let text = match std::str::from_utf8(head) {
        Ok(text) => text,
        // Only an incomplete character at the very end is acceptable.
        Err(e) if e.error_len().is_none() => match std::str::from_utf8(&head[..e.valid_up_to()]) {
            Ok(text) => text,
            Err(_) => return false,
        },
        Err(_) => return false,
    };
    !text.is_empty()
        && text
            .chars()
            .all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r' | '\x0C'))
}

/// The formats a declared MIME type (its essence: `type/subtype`,
/// lowercase, no parameters) allows, or `None` for a type this module does
/// not know the bytes of.
pub fn formats_of(essence: &str) -> Option<&'static [Format]> {
    use Format::*;
    Some(match essence {
        "audio/ogg" | "audio/opus" | "application/ogg" | "video/ogg" => &[Ogg],
        "audio/webm" | "video/webm" | "audio/x-matroska" | "video/x-matroska" => &[Matroska],
        "audio/mp4" | "audio/m4a" | "audio/x-m4a" | "video/mp4" | "video/quicktime"
        | "audio/3gpp" | "video/3gpp" | "audio/3gpp2" | "video/3gpp2" => &[Mp4, ThreeGp],
        "audio/mpeg" | "audio/mp3" | "audio/mpeg3" | "audio/x-mpeg" | "audio/x-mp3" => &[Mp3],
        // Some browsers label M4A files audio/aac.
        "audio/aac" | "audio/aacp" | "audio/x-aac" => &[Aac, Mp4, ThreeGp],
        "audio/wav" | "audio/wave" | "audio/x-wav" | "audio/vnd.wave" => &[Wav],
        "audio/flac" | "audio/x-flac" => &[Flac],
        "audio/amr" => &[Amr],
        "audio/amr-wb" => &[AmrWb],
        "image/jpeg" | "image/jpg" | "image/pjpeg" => &[Jpeg],
        "image/png" => &[Png],
        "image/gif" => &[Gif],
        "image/webp" => &[Webp],
        "image/heic" | "image/heif" | "image/heic-sequence" | "image/heif-sequence" => &[Heif],
        "image/avif" => &[Avif],
        "application/pdf" => &[Pdf],
        "application/zip" | "application/epub+zip" => &[Zip],
        e if e.starts_with("application/vnd.openxmlformats-officedocument.")
            || e.starts_with("application/vnd.oasis.opendocument.") =>
        {
            &[Zip]
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn padded(prefix: &[u8]) -> Vec<u8> {
        let mut v = prefix.to_vec();
        v.resize(HEAD_LEN.max(prefix.len()), 0);
        v
    }

    #[test]
    fn magic_numbers_name_their_format() {
        let cases: &[(&[u8], Format)] = &[
            (b"OggS\0\x02", Format::Ogg),
            (&[0x1a, 0x45, 0xdf, 0xa3, 0x9f], Format::Matroska),
            (b"\0\0\0\x1cftypM4A \0\0\0\0", Format::Mp4),
            (b"\0\0\0\x18ftypmp42", Format::Mp4),
            (b"\0\0\0\x20ftyp3gp4\0\0", Format::ThreeGp),
            (b"\0\0\0\x18ftypheic", Format::Heif),
            (b"\0\0\0\x1cftypavif", Format::Avif),
            (b"RIFF\x24\0\0\0WAVEfmt ", Format::Wav),
            (b"RIFF\x24\0\0\0WEBPVP8 ", Format::Webp),
            (b"RIFF\0\0\0\0AVI LIST", Format::Avi),
            (b"#!AMR\n", Format::Amr),
            (b"#!AMR-WB\n", Format::AmrWb),
            (b"fLaC\0\0\0\x22", Format::Flac),
            (b"ID3\x04\0", Format::Mp3),
            // MPEG-1 layer III, 128 kb/s, 44.1 kHz.
            (&[0xff, 0xfb, 0x90, 0x64], Format::Mp3),
            // ADTS, MPEG-4, no CRC.
            (&[0xff, 0xf1, 0x50, 0x80], Format::Aac),
            (&[0xff, 0xd8, 0xff, 0xe0], Format::Jpeg),
            (b"\x89PNG\r\n\x1a\n", Format::Png),
            (b"GIF89a", Format::Gif),
            (b"%PDF-1.7", Format::Pdf),
            (b"PK\x03\x04\x14\0", Format::Zip),
            (b"\x1f\x8b\x08", Format::Gzip),
            (b"II*\0", Format::Tiff),
        ];
        for (head, format) in cases {
            assert_eq!(sniff(&padded(head)), Some(*format), "{head:?}");
        }
    }

    #[test]
    fn other_bytes_are_unknown() {
        for head in [
            &b""[..],
            b"hello, world, this is text",
            &[0xff, 0x00, 0x00],
            // Sync bits but a reserved sample rate: not MP3.
            &[0xff, 0xfb, 0x9c, 0x64],
            b"{\"json\": true}",
            b"OggTruncated",
            &[0x00, 0x01, 0x02, 0x03, 0xf0],
        ] {
            assert_eq!(sniff(head), None, "{head:?}");
        }
        // Shorter than the magic number.
        assert_eq!(sniff(b"Ogg"), None);
    }

    #[test]
    fn text_is_told_from_binary() {
        assert!(looks_like_text("hello, wörld\n".as_bytes()));
        assert!(!looks_like_text(b""));
        assert!(!looks_like_text(&[0x00, 0x01, 0x02]));
    }

    #[test]
    fn declared_types_map_to_formats() {
        assert_eq!(formats_of("audio/ogg"), Some(&[Format::Ogg][..]));
        assert_eq!(formats_of("audio/webm"), Some(&[Format::Matroska][..]));
        assert_eq!(
            formats_of("audio/aac"),
            Some(&[Format::Aac, Format::Mp4, Format::ThreeGp][..])
        );
        assert_eq!(
            formats_of("application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
            Some(&[Format::Zip][..])
        );
        assert_eq!(formats_of("text/csv"), None);
        assert_eq!(formats_of("application/octet-stream"), None);
        assert!(Format::Matroska.is_audio() && !Format::Png.is_audio());
        assert!(Format::Heif.is_image() && !Format::Mp4.is_image());
    }
}
