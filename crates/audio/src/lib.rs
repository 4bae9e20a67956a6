//! Audio and media files: sniffing, probing, remuxing, encoding and the
//! channel profiles. A library without service code (no gRPC, no database,
//! no bus): the media service stores files and runs transcodes with it, the
//! gateway checks uploads with its sniffer, and `telenet media` ([`cli`])
//! lets an operator run it on a file.
//!
//! - [`sniff`]: which format a file is, from its first bytes.
//! - [`probe`]: container, codec, duration counted from the stream,
//!   waveform peaks.
//! - [`remux`]: Opus in WebM or Ogg to Ogg/Opus without re-encoding.
//! - [`encode`]: decoding to PCM and the encoders (in process, or FFmpeg
//!   and SoX as bounded separate processes).
//! - [`profiles`]: the named output forms, the channels' media policies,
//!   and [`profiles::transcode`] from any input to a profile.

pub mod cli;
pub mod encode;
pub mod probe;
pub mod profiles;
pub mod remux;
pub mod sniff;
