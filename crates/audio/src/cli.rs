//! `telenet media probe | transcode | profiles`: the probe, the profiles and
//! the transcoder run on a file from the command line, with no server: what
//! an operator runs on a customer's failing voice note. The `telenet`
//! binary mounts [`Command`] as its `media` subcommand and calls [`run`].

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;

use crate::probe::{self, MAX_INPUT_BYTES, Probe, ProbeOptions};
use crate::profiles::{self, Output};

/// `telenet media …`
#[derive(Subcommand)]
pub enum Command {
    /// Print what the media service sees in FILE: format, codec, duration
    /// (counted from the stream), size and waveform peaks.
    Probe {
        file: PathBuf,
        /// Waveform peaks to compute (0 for none, at most 1000).
        #[arg(long, default_value_t = probe::DEFAULT_PEAKS)]
        peaks: usize,
        /// Accept audio longer than a voice note (5 minutes).
        #[arg(long)]
        any_length: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Write FILE in a profile's form (see `telenet media profiles`); split
    /// outputs are written as OUT with `-1`, `-2`, … before the extension.
    Transcode {
        file: PathBuf,
        /// The profile's name.
        #[arg(long)]
        profile: String,
        /// Where to write the output.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
    },
    /// List the transcoding profiles and the channel kinds that use them.
    Profiles,
}

/// Run one `telenet media` command.
pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Probe {
            file,
            peaks,
            any_length,
            json,
        } => {
            anyhow::ensure!(
                peaks <= probe::MAX_PEAKS,
                "--peaks must be at most {}",
                probe::MAX_PEAKS
            );
            let options = ProbeOptions {
                max_duration_ms: (!any_length).then_some(probe::MAX_VOICE_NOTE_MS),
                ..ProbeOptions::VOICE_NOTE.with_peaks(peaks)
            };
            let bytes = read(&file)?;
            let p =
                probe::probe(&bytes, &options).with_context(|| format!("{}", file.display()))?;
            if json {
                println!("{}", to_json(&p));
            } else {
                print_probe(&file, &p);
            }
            Ok(())
        }
        Command::Transcode {
            file,
            profile,
            output,
        } => transcode(&file, &profile, &output),
        Command::Profiles => {
            print_profiles();
            Ok(())
        }
    }
}

fn read(file: &Path) -> anyhow::Result<Vec<u8>> {
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    probe::read_bounded(f, MAX_INPUT_BYTES).with_context(|| format!("{}", file.display()))
}

fn print_probe(file: &Path, p: &Probe) {
    println!("file:      {}", file.display());
    println!("format:    {} ({})", p.container, p.mime_type);
    println!(
        "codec:     {}, {} Hz, {} channel{}",
        p.codec,
        p.sample_rate,
        p.channels,
        if p.channels == 1 { "" } else { "s" }
    );
    println!(
        "duration:  {}.{:03} s (counted from {} packets)",
        p.duration_ms / 1000,
        p.duration_ms % 1000,
        p.packets
    );
    println!("bit rate:  {:.1} kb/s (audio)", p.bit_rate as f64 / 1000.0);
    println!("size:      {} bytes", p.size_bytes);
    for v in &p.video {
        println!("video:     {} {}x{}", v.codec, v.width, v.height);
    }
    if p.peaks.is_empty() {
        println!("peaks:     none");
    } else {
        println!("peaks:     {} of {} ms", p.peaks.len(), p.peak_slice_ms);
        println!("           {}", sparkline(&p.peaks));
        let values: Vec<String> = p.peaks.iter().map(u8::to_string).collect();
        println!("           {}", values.join(" "));
    }
}

/// Peaks as block characters, for a glance at the waveform.
fn sparkline(peaks: &[u8]) -> String {
    const BLOCKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    peaks
        .iter()
        .map(|&p| BLOCKS[usize::from(p) * 8 / 256])
        .collect()
}

fn to_json(p: &Probe) -> serde_json::Value {
    serde_json::json!({
        "container": p.container.name(),
        "codec": p.codec.name(),
        "mime_type": p.mime_type,
        "sample_rate": p.sample_rate,
        "channels": p.channels,
        "bit_rate": p.bit_rate,
        "duration_ms": p.duration_ms,
        "packets": p.packets,
        "size_bytes": p.size_bytes,
        "peaks": p.peaks,
        "peak_slice_ms": p.peak_slice_ms,
        "video": p.video.iter().map(|v| serde_json::json!({
            "codec": v.codec, "width": v.width, "height": v.height,
        })).collect::<Vec<_>>(),
    })
}

fn transcode(file: &Path, name: &str, output: &Path) -> anyhow::Result<()> {
    let profile = profiles::find(name).with_context(|| {
        let names: Vec<&str> = profiles::PROFILES.iter().map(|p| p.name).collect();
        format!("no profile named {name:?}; profiles: {}", names.join(", "))
    })?;
    let input = read(file)?;
    let out =
        profiles::transcode(&input, profile).with_context(|| format!("{}", file.display()))?;
    let many = out.parts.len() > 1;
    for (i, part) in out.parts.iter().enumerate() {
        let path = if many {
            numbered(output, i + 1)
        } else {
            output.to_owned()
        };
        std::fs::write(&path, &part.data).with_context(|| format!("writing {}", path.display()))?;
        // The output is checked by reading it back, not trusted.
        let check = match probe::probe(&part.data, &ProbeOptions::VOICE_NOTE.with_peaks(0)) {
            Ok(p) => format!(
                "{}/{} {}.{:03} s",
                p.container,
                p.codec,
                p.duration_ms / 1000,
                p.duration_ms % 1000
            ),
            Err(e) => format!("does not probe: {e}"),
        };
        println!(
            "wrote {} ({} bytes, {}, {}; {check})",
            path.display(),
            part.data.len(),
            part.mime_type,
            if out.remuxed { "remuxed" } else { "re-encoded" },
        );
    }
    Ok(())
}

/// `out.mp3` → `out-2.mp3`.
fn numbered(path: &Path, n: usize) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}-{n}.{}", ext.to_string_lossy()),
        None => format!("{stem}-{n}"),
    };
    path.with_file_name(name)
}

fn print_profiles() {
    println!(
        "{:<20} {:<6} {:<24} {:>8} {:>7} {:>9}  channels",
        "profile", "output", "format", "bitrate", "part s", "max bytes"
    );
    for p in profiles::PROFILES {
        let output = match p.output {
            Output::Voice => "voice",
            Output::Audio => "audio",
            Output::Video => "video",
        };
        let bitrate = if p.bitrate == 0 {
            "as is".to_owned()
        } else {
            format!("{}k", p.bitrate / 1000)
        };
        let part = if p.max_part_duration_ms == 0 {
            "-".to_owned()
        } else {
            (p.max_part_duration_ms / 1000).to_string()
        };
        let max_bytes = match (p.target_max_bytes, p.max_part_bytes) {
            (0, 0) => "-".to_owned(),
            (0, b) | (b, _) => b.to_string(),
        };
        let channels: Vec<&str> = p.channels_using.iter().map(|c| c.as_str_name()).collect();
        println!(
            "{:<20} {:<6} {:<24} {:>8} {:>7} {:>9}  {}",
            p.name,
            output,
            p.mime_type,
            bitrate,
            part,
            max_bytes,
            channels
                .iter()
                .map(|c| c.trim_start_matches("CHANNEL_KIND_").to_lowercase())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!();
    println!(
        "{:<12} {:<11} {:<6}  voice profiles (best first)",
        "channel", "voice as", "else"
    );
    for policy in profiles::POLICIES {
        println!(
            "{:<12} {:<11} {:<6}  {}",
            policy
                .channel
                .as_str_name()
                .trim_start_matches("CHANNEL_KIND_")
                .to_lowercase(),
            policy.voice_delivery.name(),
            policy.fallback.name(),
            if policy.voice_profiles.is_empty() {
                "(sent as uploaded)".to_owned()
            } else {
                policy.voice_profiles.join(", ")
            }
        );
    }
}
