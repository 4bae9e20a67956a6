//! What a file is, from its first bytes: the container formats agents send
//! (voice notes, pictures, common documents), recognised by their magic
//! numbers, and which declared MIME types name which format.
//!
//! This guards the door, it does not probe: it catches a file whose
//! declared type is wrong (a PNG sent as a voice note, a WebM recording
//! labelled `audio/ogg`), so nothing downstream trusts a false label. The
//! media service decides what a file really holds when it probes it.

/// Bytes needed to tell every format here apart.
pub const HEAD_LEN: usize = 16;

/// A format recognised by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Ogg,
    /// WebM and Matroska (one container).
    Matroska,
    /// ISO base media: MP4, M4A, QuickTime, 3GP.
    Mp4,
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
    Pdf,
    /// ZIP and the document formats built on it (OOXML, ODF, EPUB).
    Zip,
}

impl Format {
    /// How the format is named to clients: a name and its usual MIME type.
    pub fn describe(self) -> &'static str {
        match self {
            Format::Ogg => "Ogg (audio/ogg)",
            Format::Matroska => "WebM/Matroska (audio/webm)",
            Format::Mp4 => "MP4 (audio/mp4)",
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
            Format::Pdf => "PDF (application/pdf)",
            Format::Zip => "ZIP (application/zip)",
        }
    }

    /// Whether the format carries sound a voice note can be made of.
    pub fn is_audio(self) -> bool {
        matches!(
            self,
            Format::Ogg
                | Format::Matroska
                | Format::Mp4
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
        let brand = head.get(8..12).unwrap_or_default();
        return Some(match brand {
            b"heic" | b"heix" | b"hevc" | b"hevx" | b"heim" | b"heis" | b"mif1" | b"msf1" => {
                Format::Heif
            }
            b"avif" | b"avis" => Format::Avif,
            _ => Format::Mp4,
        });
    }
    if at(0, b"RIFF") {
        if at(8, b"WAVE") {
            return Some(Format::Wav);
        }
        if at(8, b"WEBP") {
            return Some(Format::Webp);
        }
        return None;
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
    if at(0, &[0xff, 0xd8, 0xff]) {
        return Some(Format::Jpeg);
    }
    if at(0, &[0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a]) {
        return Some(Format::Png);
    }
    if at(0, b"GIF87a") || at(0, b"GIF89a") {
        return Some(Format::Gif);
    }
    if at(0, b"%PDF-") {
        return Some(Format::Pdf);
    }
    if at(0, b"PK\x03\x04") || at(0, b"PK\x05\x06") {
        return Some(Format::Zip);
    }
    // MPEG audio frame sync: 11 set bits, then the version and the layer
    // (layer bits 00 are ADTS, i.e. AAC).
    if let [0xff, second, ..] = head
        && second & 0xe0 == 0xe0
    {
        let layer = (second >> 1) & 0b11;
        if layer == 0 && second & 0xf6 == 0xf0 {
            return Some(Format::Aac);
        }
        if layer != 0 && (second >> 3) & 0b11 != 0b01 {
            return Some(Format::Mp3);
        }
    }
    None
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
        | "audio/3gpp" | "video/3gpp" | "audio/3gpp2" | "video/3gpp2" => &[Mp4],
        "audio/mpeg" | "audio/mp3" | "audio/mpeg3" | "audio/x-mpeg" | "audio/x-mp3" => &[Mp3],
        // Some browsers label M4A files audio/aac.
        "audio/aac" | "audio/aacp" | "audio/x-aac" => &[Aac, Mp4],
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
    use telenet_kit::mime::essence;

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
            (b"\0\0\0\x18ftypheic", Format::Heif),
            (b"\0\0\0\x1cftypavif", Format::Avif),
            (b"RIFF\x24\0\0\0WAVEfmt ", Format::Wav),
            (b"RIFF\x24\0\0\0WEBPVP8 ", Format::Webp),
            (b"#!AMR\n", Format::Amr),
            (b"#!AMR-WB\n", Format::AmrWb),
            (b"fLaC\0\0\0\x22", Format::Flac),
            (b"ID3\x04\0", Format::Mp3),
            (&[0xff, 0xfb, 0x90, 0x64], Format::Mp3),
            (&[0xff, 0xf1, 0x50, 0x80], Format::Aac),
            (&[0xff, 0xd8, 0xff, 0xe0], Format::Jpeg),
            (b"\x89PNG\r\n\x1a\n", Format::Png),
            (b"GIF89a", Format::Gif),
            (b"%PDF-1.7", Format::Pdf),
            (b"PK\x03\x04\x14\0", Format::Zip),
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
            b"RIFF\x24\0\0\0AVI LIST",
            &[0xff, 0x00, 0x00],
            b"{\"json\": true}",
            b"OggTruncated",
        ] {
            assert_eq!(sniff(head), None, "{head:?}");
        }
        // Shorter than the magic number.
        assert_eq!(sniff(b"Ogg"), None);
    }

    #[test]
    fn declared_types_map_to_formats() {
        assert_eq!(formats_of("audio/ogg"), Some(&[Format::Ogg][..]));
        assert_eq!(formats_of("audio/webm"), Some(&[Format::Matroska][..]));
        assert_eq!(
            formats_of("audio/aac"),
            Some(&[Format::Aac, Format::Mp4][..])
        );
        assert_eq!(
            formats_of("application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
            Some(&[Format::Zip][..])
        );
        assert_eq!(formats_of("text/csv"), None);
        assert_eq!(formats_of("application/octet-stream"), None);
        assert_eq!(essence(" Audio/OGG; codecs=opus"), "audio/ogg");
        assert!(Format::Matroska.is_audio() && !Format::Png.is_audio());
        assert!(Format::Heif.is_image() && !Format::Mp4.is_image());
    }
}
