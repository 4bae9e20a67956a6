//! The media service's rules, without I/O: what a request must carry, the
//! limits of uploads and probes, what kind of attachment a file is, and the
//! API form of what the audio crate computes.

use telenet_audio::probe::{MAX_PEAKS, Probe};
use telenet_audio::profiles::{self, Delivery, Output, POLICIES, PROFILES, Policy, Profile};
use telenet_proto::common::v1::{AttachmentKind, ChannelKind};
use telenet_proto::media::v1 as pb;

use crate::{BlobId, Error};

pub(crate) fn require(field: &str, value: &str) -> Result<(), Error> {
    telenet_kit::error::required(field, value).map_err(Error::InvalidArgument)
}

pub(crate) fn parse_blob_id(value: &str) -> Result<BlobId, Error> {
    BlobId::parse(value).map_err(|_| {
        Error::InvalidArgument("blob_id must be 64 lowercase hex characters (a SHA-256)".into())
    })
}

pub(crate) fn too_large(limit: u64) -> Error {
    Error::ResourceExhausted(format!("upload exceeds max_upload_bytes ({limit} bytes)"))
}

pub(crate) fn size_mismatch(declared: u64, received: u64, qualifier: &str) -> Error {
    Error::InvalidArgument(format!(
        "size_bytes declared {declared} bytes but {qualifier}{received} were received"
    ))
}

/// Sizes are stored as BIGINT.
pub(crate) fn to_bigint(n: u64) -> Result<i64, Error> {
    i64::try_from(n).map_err(|_| too_large(n))
}

/// The waveform slices a `Probe` request asks for: 0 (no waveform) or 16
/// to [`MAX_PEAKS`].
pub(crate) fn waveform_peaks(asked: u32) -> Result<usize, Error> {
    match usize::try_from(asked) {
        Ok(0) => Ok(0),
        Ok(n) if (16..=MAX_PEAKS).contains(&n) => Ok(n),
        _ => Err(Error::InvalidArgument(format!(
            "waveform_peaks must be 0 (no waveform) or between 16 and {MAX_PEAKS}"
        ))),
    }
}

/// Whether a declared type is worth probing (audio or video).
pub(crate) fn is_media_type(declared: &str) -> bool {
    let declared = declared.to_ascii_lowercase();
    declared.starts_with("audio/") || declared.starts_with("video/")
}

/// The kind of attachment a file is: by its detected type when it was
/// probed, else by its declared one.
pub(crate) fn attachment_kind(declared: &str, detected: &str) -> AttachmentKind {
    let kind_of = if detected.is_empty() {
        declared.to_ascii_lowercase()
    } else {
        detected.to_owned()
    };
    if kind_of.starts_with("audio/") {
        AttachmentKind::Audio
    } else if kind_of.starts_with("video/") {
        AttachmentKind::Video
    } else if kind_of.starts_with("image/") {
        AttachmentKind::Image
    } else {
        AttachmentKind::File
    }
}

/// The profile called `name`, or an error listing them.
pub(crate) fn find_profile(name: &str) -> Result<&'static Profile, Error> {
    if name.trim().is_empty() {
        return Err(Error::InvalidArgument("profile is required".into()));
    }
    profiles::find(name).ok_or_else(|| {
        let names: Vec<&str> = PROFILES.iter().map(|p| p.name).collect();
        Error::InvalidArgument(format!(
            "no profile named {name:?}; profiles: {}",
            names.join(", ")
        ))
    })
}

/// The API form of a probe of blob `blob_id`, probed at `probed_at` (µs).
pub(crate) fn probe_result(probe: &Probe, blob_id: &str, probed_at: i64) -> pb::ProbeResult {
    pb::ProbeResult {
        blob_id: blob_id.to_owned(),
        container: probe.container.name().to_owned(),
        mime_type: probe.mime_type.clone(),
        duration_ms: probe.duration_ms,
        duration_source: pb::DurationSource::Demuxed as i32,
        bit_rate_bps: bit_rate(probe.size_bytes, probe.duration_ms),
        audio: vec![pb::AudioStream {
            index: 0,
            codec: probe.codec.name().to_owned(),
            profile: String::new(),
            sample_rate_hz: probe.sample_rate,
            channels: probe.channels,
            bit_rate_bps: probe.bit_rate,
            duration_ms: probe.duration_ms,
        }],
        video: probe
            .video
            .iter()
            .enumerate()
            .map(|(i, v)| pb::VideoStream {
                index: u32::try_from(i + 1).unwrap_or(u32::MAX),
                codec: v.codec.clone(),
                width: v.width,
                height: v.height,
                frame_rate: 0.0,
                bit_rate_bps: 0,
                duration_ms: 0,
            })
            .collect(),
        waveform: (!probe.peaks.is_empty()).then(|| pb::Waveform {
            peaks: probe.peaks.iter().map(|&p| u32::from(p)).collect(),
            slice_ms: probe.peak_slice_ms,
        }),
        probed_at: Some(telenet_store::timestamp(probed_at)),
    }
}

/// Bits per second of `bytes` over `duration_ms` (0 for no duration).
fn bit_rate(bytes: u64, duration_ms: u64) -> u64 {
    if duration_ms == 0 {
        return 0;
    }
    let bps = u128::from(bytes) * 8 * 1000 / u128::from(duration_ms);
    u64::try_from(bps).unwrap_or(u64::MAX)
}

/// The answer of `ListProfiles`: every profile, and the policy of
/// `channel` (or of every channel kind when unspecified).
pub(crate) fn list_profiles(channel: ChannelKind) -> pb::ListProfilesResponse {
    pb::ListProfilesResponse {
        profiles: PROFILES.iter().map(profile_proto).collect(),
        policies: POLICIES
            .iter()
            .filter(|p| channel == ChannelKind::Unspecified || p.channel == channel)
            .map(policy_proto)
            .collect(),
    }
}

fn profile_proto(profile: &Profile) -> pb::TranscodeProfile {
    pb::TranscodeProfile {
        name: profile.name.to_owned(),
        description: profile.description.to_owned(),
        output: output_proto(profile.output) as i32,
        mime_type: profile.mime_type.to_owned(),
        extension: profile.extension.to_owned(),
        container: profile.container.to_owned(),
        audio_codec: profile.codec.to_owned(),
        sample_rate_hz: profile.sample_rate,
        channels: profile.channels,
        audio_bit_rate_bps: u64::from(profile.bitrate),
        video_codec: profile.video_codec.to_owned(),
        max_part_duration_ms: profile.max_part_duration_ms,
        max_part_bytes: profile.max_part_bytes,
        target_max_bytes: profile.target_max_bytes,
        remux_from: profile.remux_from.iter().map(|&m| m.to_owned()).collect(),
    }
}

fn policy_proto(policy: &Policy) -> pb::ChannelMediaPolicy {
    pb::ChannelMediaPolicy {
        channel_kind: policy.channel as i32,
        voice_delivery: delivery_proto(policy.voice_delivery) as i32,
        voice_profiles: policy
            .voice_profiles
            .iter()
            .map(|&p| p.to_owned())
            .collect(),
        audio_profiles: policy
            .audio_profiles
            .iter()
            .map(|&p| p.to_owned())
            .collect(),
        fallback: delivery_proto(policy.fallback) as i32,
    }
}

fn output_proto(output: Output) -> pb::ProfileOutput {
    match output {
        Output::Voice => pb::ProfileOutput::Voice,
        Output::Audio => pb::ProfileOutput::Audio,
        Output::Video => pb::ProfileOutput::Video,
    }
}

fn delivery_proto(delivery: Delivery) -> pb::VoiceDelivery {
    match delivery {
        Delivery::VoiceNote => pb::VoiceDelivery::VoiceNote,
        Delivery::AudioFile => pb::VoiceDelivery::AudioFile,
        Delivery::File => pb::VoiceDelivery::File,
        Delivery::Video => pb::VoiceDelivery::Video,
        Delivery::Link => pb::VoiceDelivery::Link,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waveform_peaks_are_none_or_16_to_1000() {
        assert_eq!(waveform_peaks(0).ok(), Some(0));
        assert_eq!(waveform_peaks(16).ok(), Some(16));
        assert_eq!(waveform_peaks(1000).ok(), Some(1000));
        for bad in [1, 15, 1001, u32::MAX] {
            assert!(waveform_peaks(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_kind_follows_the_detected_type_first() {
        assert_eq!(attachment_kind("audio/ogg", ""), AttachmentKind::Audio);
        assert_eq!(
            attachment_kind("audio/ogg", "video/webm; codecs=opus"),
            AttachmentKind::Video
        );
        assert_eq!(attachment_kind("Image/PNG", ""), AttachmentKind::Image);
        assert_eq!(attachment_kind("application/pdf", ""), AttachmentKind::File);
    }
}
