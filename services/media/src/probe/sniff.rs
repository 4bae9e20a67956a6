//! Which format a file is, from its first bytes (never from its name or
//! declared type). Common non-audio files are recognised too, so the error
//! can say "a PNG image" rather than "unknown format".

use super::Container;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sniffed {
    Audio(Container),
    /// Something that is not audio at all.
    NotAudio(&'static str),
    /// A media format that may hold audio but is not handled.
    Unsupported(&'static str),
    Unknown,
}

pub(crate) fn sniff(data: &[u8]) -> Sniffed {
    use Sniffed::*;
    let starts = |magic: &[u8]| data.starts_with(magic);
    if starts(&[0x1A, 0x45, 0xDF, 0xA3]) {
        // WebM and Matroska share the EBML header; the DocType inside tells
        // them apart, which the Matroska parser checks.
        return Audio(Container::Webm);
    }
    if starts(b"OggS") {
        return Audio(Container::Ogg);
    }
    if data.get(4..8) == Some(b"ftyp") {
        return match data.get(8..11) {
            Some(b"3gp") | Some(b"3g2") => Audio(Container::ThreeGp),
            Some(b"hei") | Some(b"mif") | Some(b"avi") => NotAudio("a HEIF/AVIF image"),
            _ => Audio(Container::Mp4),
        };
    }
    if starts(b"RIFF") {
        return match data.get(8..12) {
            Some(b"WAVE") => Audio(Container::Wav),
            Some(b"WEBP") => NotAudio("a WebP image"),
            Some(b"AVI ") => Unsupported("AVI files"),
            _ => Unknown,
        };
    }
    if starts(b"#!AMR\n") || starts(b"#!AMR-WB\n") {
        return Audio(Container::Amr);
    }
    if starts(b"fLaC") {
        return Audio(Container::Flac);
    }
    if starts(b"ID3") {
        return Audio(Container::Mp3);
    }
    if let [0xFF, b1, b2, ..] = *data
        && b1 & 0xE0 == 0xE0
    {
        // MPEG audio sync. Layer bits 00 are ADTS (AAC); otherwise a valid
        // MPEG audio frame header: version not reserved, layer set, bit
        // rate index not "bad", sample rate index not reserved.
        if b1 & 0xF6 == 0xF0 {
            return Audio(Container::Adts);
        }
        let version = (b1 >> 3) & 0x03;
        let layer = (b1 >> 1) & 0x03;
        let bitrate = b2 >> 4;
        let rate = (b2 >> 2) & 0x03;
        if version != 1 && layer != 0 && bitrate != 0x0F && rate != 0x03 {
            return Audio(Container::Mp3);
        }
    }
    for (magic, what) in NOT_AUDIO {
        if starts(magic) {
            return NotAudio(what);
        }
    }
    if looks_like_text(data) {
        return NotAudio("a text file");
    }
    Unknown
}

/// Magic numbers of files people attach by mistake.
const NOT_AUDIO: &[(&[u8], &str)] = &[
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xFF\xD8\xFF", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"%PDF-", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (or an office document)"),
    (b"\x1F\x8B", "a gzip archive"),
    (b"\x7FELF", "an executable"),
    (b"II*\0", "a TIFF image"),
    (b"MM\0*", "a TIFF image"),
    (b"\x00\x00\x01\xBA", "an MPEG program stream video"),
];

/// UTF-8 text without control characters other than whitespace, judged on
/// the first 1 KiB (a character cut at that boundary is fine).
fn looks_like_text(data: &[u8]) -> bool {
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

#[cfg(test)]
mod tests {
    use super::{Container, Sniffed, sniff};

    #[test]
    fn recognises_containers_by_magic() {
        assert_eq!(
            sniff(b"\x1A\x45\xDF\xA3rest"),
            Sniffed::Audio(Container::Webm)
        );
        assert_eq!(sniff(b"OggS\0\x02"), Sniffed::Audio(Container::Ogg));
        assert_eq!(
            sniff(b"\0\0\0\x20ftypM4A \0\0"),
            Sniffed::Audio(Container::Mp4)
        );
        assert_eq!(
            sniff(b"\0\0\0\x20ftyp3gp4\0\0"),
            Sniffed::Audio(Container::ThreeGp)
        );
        assert_eq!(
            sniff(b"RIFF\0\0\0\0WAVEfmt "),
            Sniffed::Audio(Container::Wav)
        );
        assert_eq!(sniff(b"#!AMR\n\x3c"), Sniffed::Audio(Container::Amr));
        assert_eq!(sniff(b"#!AMR-WB\n"), Sniffed::Audio(Container::Amr));
        assert_eq!(sniff(b"ID3\x04\0"), Sniffed::Audio(Container::Mp3));
        // MPEG-1 layer III, 128 kb/s, 44.1 kHz.
        assert_eq!(
            sniff(&[0xFF, 0xFB, 0x90, 0x64]),
            Sniffed::Audio(Container::Mp3)
        );
        // ADTS, MPEG-4, no CRC.
        assert_eq!(
            sniff(&[0xFF, 0xF1, 0x50, 0x80]),
            Sniffed::Audio(Container::Adts)
        );
        // Sync bits but a reserved sample rate: not MP3.
        assert_eq!(sniff(&[0xFF, 0xFB, 0x9C, 0x64]), Sniffed::Unknown);
    }

    #[test]
    fn names_what_is_not_audio() {
        assert_eq!(
            sniff(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"),
            Sniffed::NotAudio("a PNG image")
        );
        assert_eq!(
            sniff(b"\xFF\xD8\xFF\xE0"),
            Sniffed::NotAudio("a JPEG image")
        );
        assert_eq!(
            sniff("hello, wörld\n".as_bytes()),
            Sniffed::NotAudio("a text file")
        );
        assert_eq!(
            sniff(b"RIFF\0\0\0\0AVI LIST"),
            Sniffed::Unsupported("AVI files")
        );
        assert_eq!(sniff(&[0x00, 0x01, 0x02, 0x03, 0xF0]), Sniffed::Unknown);
    }
}
