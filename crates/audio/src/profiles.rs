//! Transcoding profiles: the fixed, named forms a voice note or audio file
//! is turned into for channels, and which channel kinds use which.
//!
//! The table is the voice-note output matrix of the channel research
//! (WhatsApp and Telegram take Ogg/Opus voice notes; Messenger, Instagram,
//! LINE, Viber, e-mail and Safari M4A/AAC or MP3; WeChat AMR or MP3 of at
//! most 60 s and 2 MB; X/Twitter only video; SMS a link). Names are stable
//! identifiers used in the API and stored with variants.
//!
//! [`transcode`] turns a file into a profile's output. The Ogg/Opus remux
//! (same Opus packets, new container) is the fast path for Opus inputs.

use telenet_proto::common::v1::ChannelKind;

use crate::encode::{self, EncodeError, Missing, Program, Recipe, Spec, Tools};
use crate::probe::{DURATION_GRACE_MS, MAX_VOICE_NOTE_MS, ProbeError, ProbeOptions};
use crate::remux;

/// What a profile produces, as an attachment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// A voice note, sent as one where the channel has them.
    Voice,
    /// An audio file.
    Audio,
    /// A video (the audio over a still image).
    Video,
}

/// A named recipe for one output form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub name: &'static str,
    /// What it is for (one line).
    pub description: &'static str,
    pub output: Output,
    pub mime_type: &'static str,
    /// File extension, without the dot.
    pub extension: &'static str,
    pub container: &'static str,
    pub codec: &'static str,
    pub sample_rate: u32,
    pub channels: u32,
    /// Target audio bit rate in bits per second; 0 when the input's is kept
    /// (remux).
    pub bitrate: u32,
    /// Video codec, for video outputs.
    pub video_codec: &'static str,
    /// Longest input accepted, in milliseconds.
    pub max_duration_ms: u64,
    /// Outputs longer than this are cut into parts (0: never).
    pub max_part_duration_ms: u64,
    /// Each part must be at most this many bytes (0: no limit).
    pub max_part_bytes: u64,
    /// A size to aim for (0: none): WhatsApp shows a play button only
    /// under 512 KB.
    pub target_max_bytes: u64,
    /// Input types that are remuxed rather than re-encoded, when the result
    /// fits `target_max_bytes`.
    pub remux_from: &'static [&'static str],
    /// Channel kinds that use it, for voice notes or audio files.
    pub channels_using: &'static [ChannelKind],
}

/// Name of the remux-only profile.
pub const OGG_OPUS_REMUX: &str = "ogg-opus-remux";

/// Name of the profile every browser plays (the agent's player, the web
/// widget): MP4/AAC and MP3 kept as they are, anything else M4A/AAC.
pub const WEB_PLAYBACK: &str = "audio-web-playback";

/// The WhatsApp play-button threshold (512 KB, read as 512 000 bytes: the
/// stricter reading).
pub const WHATSAPP_VOICE_BYTES: u64 = encode::WHATSAPP_VOICE_MAX_BYTES;

const OPUS_INPUTS: &[&str] = &["audio/webm; codecs=opus", "audio/ogg; codecs=opus"];

/// Every profile.
pub static PROFILES: &[Profile] = &[
    Profile {
        name: "voice-ogg-opus",
        description: "Ogg/Opus voice note, mono, speech bit rate lowered as needed to stay under 512 KB (WhatsApp's play button)",
        output: Output::Voice,
        mime_type: "audio/ogg; codecs=opus",
        extension: "ogg",
        container: "ogg",
        codec: "opus",
        sample_rate: 48_000,
        channels: 1,
        // The most a note gets; longer notes get less so the file stays
        // under `target_max_bytes` (512 000 bytes over 300 s is 13.65 kb/s
        // with the Ogg pages: about 11.7 kb/s of Opus for 5 minutes).
        bitrate: 24_000,
        video_codec: "",
        max_duration_ms: MAX_VOICE_NOTE_MS,
        max_part_duration_ms: 0,
        max_part_bytes: 16 * 1024 * 1024,
        target_max_bytes: WHATSAPP_VOICE_BYTES,
        remux_from: OPUS_INPUTS,
        channels_using: &[ChannelKind::Whatsapp, ChannelKind::Telegram],
    },
    Profile {
        name: OGG_OPUS_REMUX,
        description: "Ogg/Opus with the input's own Opus packets (no re-encode, any size); Opus inputs only",
        output: Output::Audio,
        mime_type: "audio/ogg; codecs=opus",
        extension: "ogg",
        container: "ogg",
        codec: "opus",
        sample_rate: 48_000,
        channels: 0,
        bitrate: 0,
        video_codec: "",
        max_duration_ms: MAX_VOICE_NOTE_MS,
        max_part_duration_ms: 0,
        max_part_bytes: 0,
        target_max_bytes: 0,
        remux_from: OPUS_INPUTS,
        channels_using: &[],
    },
    Profile {
        name: "audio-m4a-aac",
        description: "M4A/AAC-LC, mono: Messenger, Instagram, LINE (with its duration), Viber, e-mail, Safari",
        output: Output::Audio,
        mime_type: "audio/mp4",
        extension: "m4a",
        container: "mp4",
        codec: "aac",
        sample_rate: 48_000,
        channels: 1,
        bitrate: 64_000,
        video_codec: "",
        max_duration_ms: MAX_VOICE_NOTE_MS,
        max_part_duration_ms: 0,
        max_part_bytes: 25 * 1024 * 1024,
        target_max_bytes: 0,
        remux_from: &[],
        channels_using: &[
            ChannelKind::Messenger,
            ChannelKind::Instagram,
            ChannelKind::Line,
            ChannelKind::Viber,
            ChannelKind::Email,
        ],
    },
    Profile {
        name: WEB_PLAYBACK,
        description: "What every browser plays, Safari included: MP4/AAC and MP3 as they are, anything else M4A/AAC",
        output: Output::Audio,
        mime_type: "audio/mp4",
        extension: "m4a",
        container: "mp4",
        codec: "aac",
        sample_rate: 48_000,
        channels: 1,
        bitrate: 64_000,
        video_codec: "",
        max_duration_ms: MAX_VOICE_NOTE_MS,
        max_part_duration_ms: 0,
        max_part_bytes: 0,
        target_max_bytes: 0,
        remux_from: &[],
        channels_using: &[ChannelKind::WebWidget],
    },
    Profile {
        name: "audio-mp3",
        description: "MP3, mono: e-mail, Viber, Messenger",
        output: Output::Audio,
        mime_type: "audio/mpeg",
        extension: "mp3",
        container: "mp3",
        codec: "mp3",
        sample_rate: 48_000,
        channels: 1,
        bitrate: 64_000,
        video_codec: "",
        max_duration_ms: MAX_VOICE_NOTE_MS,
        max_part_duration_ms: 0,
        max_part_bytes: 25 * 1024 * 1024,
        target_max_bytes: 0,
        remux_from: &[],
        channels_using: &[
            ChannelKind::Email,
            ChannelKind::Viber,
            ChannelKind::Messenger,
        ],
    },
    Profile {
        name: "voice-amr",
        description: "AMR-NB voice, parts of at most 60 s and 2 MB: WeChat",
        output: Output::Voice,
        mime_type: "audio/amr",
        extension: "amr",
        container: "amr",
        codec: "amr_nb",
        sample_rate: 8_000,
        channels: 1,
        bitrate: 12_200,
        video_codec: "",
        max_duration_ms: MAX_VOICE_NOTE_MS,
        max_part_duration_ms: 60_000,
        max_part_bytes: 2 * 1024 * 1024,
        target_max_bytes: 0,
        remux_from: &[],
        channels_using: &[ChannelKind::Wechat],
    },
    Profile {
        name: "voice-mp3-parts",
        description: "MP3 mono 32 kb/s, parts of at most 60 s and 2 MB: WeChat",
        output: Output::Voice,
        mime_type: "audio/mpeg",
        extension: "mp3",
        container: "mp3",
        codec: "mp3",
        sample_rate: 24_000,
        channels: 1,
        bitrate: 32_000,
        video_codec: "",
        max_duration_ms: MAX_VOICE_NOTE_MS,
        max_part_duration_ms: 60_000,
        max_part_bytes: 2 * 1024 * 1024,
        target_max_bytes: 0,
        remux_from: &[],
        channels_using: &[ChannelKind::Wechat],
    },
    Profile {
        name: "video-still-mp4",
        description: "H.264 still image with AAC-LC audio, for channels with video but no audio: X/Twitter",
        output: Output::Video,
        mime_type: "video/mp4",
        extension: "mp4",
        container: "mp4",
        codec: "aac",
        sample_rate: 48_000,
        channels: 1,
        bitrate: 64_000,
        video_codec: "h264",
        max_duration_ms: MAX_VOICE_NOTE_MS,
        max_part_duration_ms: 0,
        max_part_bytes: 15 * 1024 * 1024,
        target_max_bytes: 0,
        remux_from: &[],
        channels_using: &[ChannelKind::Twitter],
    },
];

/// The profile called `name`.
pub fn find(name: &str) -> Option<&'static Profile> {
    PROFILES.iter().find(|p| p.name == name)
}

/// How voice notes reach a channel kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    VoiceNote,
    AudioFile,
    File,
    Video,
    Link,
}

/// The media policy of one channel kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub channel: ChannelKind,
    pub voice_delivery: Delivery,
    /// Profiles for voice notes, best first.
    pub voice_profiles: &'static [&'static str],
    /// Profiles for other audio files, best first (empty: sent as uploaded).
    pub audio_profiles: &'static [&'static str],
    /// When no profile gives an acceptable file (too long, too large).
    pub fallback: Delivery,
}

/// Every channel kind's policy (channel research, section 4).
pub static POLICIES: &[Policy] = &[
    Policy {
        channel: ChannelKind::Whatsapp,
        voice_delivery: Delivery::VoiceNote,
        voice_profiles: &["voice-ogg-opus"],
        audio_profiles: &[],
        fallback: Delivery::Link,
    },
    Policy {
        channel: ChannelKind::Telegram,
        voice_delivery: Delivery::VoiceNote,
        voice_profiles: &["voice-ogg-opus"],
        audio_profiles: &[],
        fallback: Delivery::Link,
    },
    Policy {
        channel: ChannelKind::Messenger,
        voice_delivery: Delivery::AudioFile,
        voice_profiles: &["audio-m4a-aac", "audio-mp3"],
        audio_profiles: &["audio-m4a-aac", "audio-mp3"],
        fallback: Delivery::Link,
    },
    Policy {
        channel: ChannelKind::Instagram,
        voice_delivery: Delivery::AudioFile,
        voice_profiles: &["audio-m4a-aac"],
        audio_profiles: &["audio-m4a-aac"],
        fallback: Delivery::Link,
    },
    Policy {
        channel: ChannelKind::Line,
        voice_delivery: Delivery::AudioFile,
        voice_profiles: &["audio-m4a-aac"],
        audio_profiles: &["audio-m4a-aac"],
        fallback: Delivery::Link,
    },
    Policy {
        channel: ChannelKind::Viber,
        voice_delivery: Delivery::File,
        voice_profiles: &["audio-m4a-aac", "audio-mp3"],
        audio_profiles: &[],
        fallback: Delivery::Link,
    },
    Policy {
        channel: ChannelKind::Wechat,
        voice_delivery: Delivery::VoiceNote,
        voice_profiles: &["voice-amr", "voice-mp3-parts"],
        audio_profiles: &["voice-mp3-parts"],
        fallback: Delivery::Link,
    },
    Policy {
        channel: ChannelKind::Email,
        voice_delivery: Delivery::AudioFile,
        voice_profiles: &["audio-mp3", "audio-m4a-aac"],
        audio_profiles: &[],
        fallback: Delivery::Link,
    },
    Policy {
        channel: ChannelKind::Twitter,
        voice_delivery: Delivery::Video,
        voice_profiles: &["video-still-mp4"],
        audio_profiles: &["video-still-mp4"],
        fallback: Delivery::Link,
    },
    Policy {
        channel: ChannelKind::Sms,
        voice_delivery: Delivery::Link,
        voice_profiles: &[],
        audio_profiles: &[],
        fallback: Delivery::Link,
    },
    Policy {
        channel: ChannelKind::WebWidget,
        voice_delivery: Delivery::VoiceNote,
        // The widget plays the original; browsers that cannot (Safari)
        // get this.
        voice_profiles: &[WEB_PLAYBACK],
        audio_profiles: &[],
        fallback: Delivery::Link,
    },
    Policy {
        // Custom channels declare what they accept; by default a voice note
        // goes as uploaded.
        channel: ChannelKind::Custom,
        voice_delivery: Delivery::AudioFile,
        voice_profiles: &[],
        audio_profiles: &[],
        fallback: Delivery::Link,
    },
];

/// The policy of a channel kind.
pub fn policy(channel: ChannelKind) -> Option<&'static Policy> {
    POLICIES.iter().find(|p| p.channel == channel)
}

/// One output file of a transcode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputPart {
    pub data: Vec<u8>,
    pub mime_type: &'static str,
    pub duration_ms: u64,
}

/// The output of a transcode: one part, or several for profiles that split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transcoded {
    pub parts: Vec<OutputPart>,
    /// The input was remuxed, not re-encoded.
    pub remuxed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TranscodeError {
    #[error("no profile named {0:?} (see `telenet media profiles`)")]
    UnknownProfile(String),
    /// The input is not acceptable (corrupt, too long, not audio, …).
    #[error(transparent)]
    Input(#[from] ProbeError),
    /// Decoding or encoding failed (see [`EncodeError::is_permanent`]).
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The profile cannot make this output (yet, or from this input).
    #[error("profile {profile}: {reason}")]
    Unsupported {
        profile: &'static str,
        reason: String,
    },
}

/// Turn `input` into `profile`'s output, external encoders found on `PATH`
/// with their default limits.
pub fn transcode(input: &[u8], profile: &Profile) -> Result<Transcoded, TranscodeError> {
    transcode_with(input, profile, &encode::Options::default())
}

/// Turn `input` into `profile`'s output: the remux when the profile allows
/// it and the result fits, else a re-encode ([`crate::encode`]).
pub fn transcode_with(
    input: &[u8],
    profile: &Profile,
    encode_options: &encode::Options,
) -> Result<Transcoded, TranscodeError> {
    let options = ProbeOptions {
        max_duration_ms: Some(profile.max_duration_ms),
        peaks: 0,
        ..ProbeOptions::VOICE_NOTE
    };
    if !profile.remux_from.is_empty()
        && let Some(remuxed) = try_remux(input, profile, &options)?
    {
        return Ok(remuxed);
    }
    match profile.name {
        OGG_OPUS_REMUX => Err(TranscodeError::Unsupported {
            profile: profile.name,
            reason: "the input is not Opus in WebM or Ogg, so it cannot be remuxed".into(),
        }),
        _ => reencode(input, profile, &options, encode_options),
    }
}

/// The re-encode of `input`: probed first, so a corrupt, over-long or
/// non-audio input fails with the probe's clear message before anything is
/// decoded.
fn reencode(
    input: &[u8],
    profile: &Profile,
    options: &ProbeOptions,
    encode_options: &encode::Options,
) -> Result<Transcoded, TranscodeError> {
    let spec = profile.spec().ok_or_else(|| TranscodeError::Unsupported {
        profile: profile.name,
        reason: "re-encoding to this profile is not available".into(),
    })?;
    crate::probe::probe(input, options)?;
    let encoded = encode::encode(input, &spec, encode_options)?;
    let remuxed = encoded.passthrough;
    Ok(Transcoded {
        parts: encoded
            .parts
            .into_iter()
            .map(|p| OutputPart {
                data: p.bytes,
                // A passed-through file keeps its own type.
                mime_type: if remuxed {
                    p.mime_type
                } else {
                    profile.mime_type
                },
                duration_ms: p.duration_ms,
            })
            .collect(),
        remuxed,
    })
}

/// The remux of `input` when it is Opus and the result suits the profile
/// (mono when the profile is, within `target_max_bytes`); `None` when it
/// must be re-encoded instead. Input errors (corrupt, too long) are errors
/// whichever way the output would be made.
fn try_remux(
    input: &[u8],
    profile: &Profile,
    options: &ProbeOptions,
) -> Result<Option<Transcoded>, TranscodeError> {
    let remuxed = match remux::to_ogg_opus(input, options) {
        Ok(r) => r,
        // Not Opus: a re-encode's business.
        Err(ProbeError::Unsupported { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let channels = remuxed.channels;
    let fits = (profile.channels == 0 || channels == profile.channels)
        && (profile.target_max_bytes == 0 || remuxed.data.len() as u64 <= profile.target_max_bytes)
        && (profile.max_part_bytes == 0 || remuxed.data.len() as u64 <= profile.max_part_bytes);
    if !fits && profile.name != OGG_OPUS_REMUX {
        return Ok(None);
    }
    Ok(Some(Transcoded {
        parts: vec![OutputPart {
            data: remuxed.data,
            mime_type: profile.mime_type,
            duration_ms: remuxed.duration_ms,
        }],
        remuxed: true,
    }))
}

impl Delivery {
    /// A short name for listings.
    pub fn name(self) -> &'static str {
        match self {
            Delivery::VoiceNote => "voice note",
            Delivery::AudioFile => "audio file",
            Delivery::File => "file",
            Delivery::Video => "video",
            Delivery::Link => "link",
        }
    }
}

impl Profile {
    /// How the profile is made when it is re-encoded, from what it
    /// declares: container, codecs, bit rate, rate and limits. `None` for a
    /// profile that is not a re-encode (the remux-only one).
    pub fn spec(&self) -> Option<Spec> {
        let profile = self;
        let recipe = match (
            profile.name,
            profile.container,
            profile.codec,
            profile.video_codec,
        ) {
            (WEB_PLAYBACK, ..) => Recipe::WebPlayback {
                bitrate_bps: profile.bitrate,
            },
            (_, "ogg", "opus", "") if profile.bitrate > 0 => Recipe::OggOpus {
                min_bitrate_bps: encode::OPUS_MIN_BITRATE_BPS.min(profile.bitrate),
                max_bitrate_bps: profile.bitrate,
            },
            (_, "mp4", "aac", "") => Recipe::M4aAac {
                bitrate_bps: profile.bitrate,
            },
            (_, "mp3", "mp3", "") => Recipe::Mp3 {
                bitrate_bps: profile.bitrate,
                sample_rate: (profile.sample_rate > 0).then_some(profile.sample_rate),
            },
            (_, "amr", "amr_nb", "") => Recipe::AmrNb,
            (_, "mp4", "aac", "h264") => Recipe::StillMp4 {
                audio_bitrate_bps: profile.bitrate,
            },
            _ => return None,
        };
        // Parts: as many as it takes to hold the longest input accepted, no
        // more (for WeChat, 5 minutes in 60-second parts: 5, or 6 for a note a
        // few milliseconds over 5 minutes).
        let max_parts = if profile.max_part_duration_ms > 0 {
            (profile.max_duration_ms + DURATION_GRACE_MS)
                .div_ceil(profile.max_part_duration_ms)
                .max(1) as usize
        } else {
            1
        };
        Some(Spec {
            recipe,
            target_max_bytes: profile.target_max_bytes,
            max_part_ms: profile.max_part_duration_ms,
            max_part_bytes: profile.max_part_bytes,
            max_parts,
        })
    }

    /// The external program this profile's output is made with, if any.
    pub fn program(&self) -> Option<Program> {
        self.spec().and_then(|spec| spec.recipe.program())
    }
}

/// A profile that cannot be made on this machine, or not from every input,
/// because the program it runs is missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    pub profile: &'static str,
    /// The program and why it cannot be run.
    pub missing: Missing,
    /// Some inputs are still made without the program (the web playback
    /// profile keeps MP4/AAC and MP3 as they are): requests are taken, and
    /// the others fail naming the program.
    pub partly: bool,
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let program = self.missing.program.name();
        let inputs = if self.partly {
            " for inputs other than MP4/AAC and MP3"
        } else {
            ""
        };
        write!(
            f,
            "{} needs {program}{inputs}, {}",
            self.profile, self.missing.reason
        )
    }
}

/// The profiles whose program `tools` cannot find, in table order.
pub fn unavailable(tools: &Tools) -> Vec<Unavailable> {
    PROFILES
        .iter()
        .filter_map(|profile| {
            let program = profile.program()?;
            let missing = tools.locate(program).err()?;
            let partly = matches!(
                profile.spec().map(|s| s.recipe),
                Some(Recipe::WebPlayback { .. })
            );
            Some(Unavailable {
                profile: profile.name,
                missing,
                partly,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{POLICIES, PROFILES, find, unavailable};
    use crate::encode::Tools;
    use telenet_proto::common::v1::ChannelKind;

    #[test]
    fn profiles_without_their_program_are_named_with_the_reason() {
        let tools = Tools {
            ffmpeg: "/nonexistent/telenet-test/ffmpeg".into(),
            sox: "telenet-test-no-such-sox".into(),
            ..Tools::default()
        };
        let missing: Vec<String> = unavailable(&tools).iter().map(|u| u.to_string()).collect();
        assert_eq!(
            missing,
            [
                "audio-m4a-aac needs ffmpeg, /nonexistent/telenet-test/ffmpeg does not exist",
                "audio-web-playback needs ffmpeg for inputs other than MP4/AAC and MP3, \
                 /nonexistent/telenet-test/ffmpeg does not exist",
                "voice-amr needs sox, telenet-test-no-such-sox not found on PATH",
                "video-still-mp4 needs ffmpeg, /nonexistent/telenet-test/ffmpeg does not exist",
            ]
        );
        // The in-process profiles never need a program.
        for name in [
            "voice-ogg-opus",
            "ogg-opus-remux",
            "audio-mp3",
            "voice-mp3-parts",
        ] {
            assert_eq!(find(name).and_then(|p| p.program()), None, "{name}");
        }
    }

    #[test]
    fn every_policy_names_existing_profiles_and_every_channel_has_one() {
        for policy in POLICIES {
            for name in policy.voice_profiles.iter().chain(policy.audio_profiles) {
                assert!(find(name).is_some(), "{:?} names {name}", policy.channel);
            }
        }
        for kind in 1..=12 {
            let kind = ChannelKind::try_from(kind).expect("a channel kind");
            assert!(
                POLICIES.iter().any(|p| p.channel == kind),
                "{kind:?} has no policy"
            );
        }
    }

    #[test]
    fn profile_names_are_unique_and_channels_agree_with_policies() {
        for (i, p) in PROFILES.iter().enumerate() {
            assert!(
                PROFILES[i + 1..].iter().all(|q| q.name != p.name),
                "{}",
                p.name
            );
            for channel in p.channels_using {
                let policy = POLICIES
                    .iter()
                    .find(|q| q.channel == *channel)
                    .expect("a policy");
                assert!(
                    policy.voice_profiles.contains(&p.name)
                        || policy.audio_profiles.contains(&p.name),
                    "{} claims {channel:?}",
                    p.name
                );
            }
        }
    }
}
