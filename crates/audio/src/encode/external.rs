//! External encoders (FFmpeg, SoX) run as separate processes with limits.
//!
//! The encoders only ever read audio this service has already decoded — raw
//! 16-bit PCM on standard input — so no container parser of theirs sees
//! untrusted bytes; the one exception is SoX decoding AMR input (no Rust
//! decoder exists). Even so each run is boxed in:
//!
//! - input through a pipe, output through a pipe (or one file in a private
//!   temporary directory, for MP4, whose index is written after the data);
//! - FFmpeg is told to open nothing but pipes (`-protocol_whitelist pipe`, on
//!   input and output; `file` only for that one output file), never reads the
//!   terminal (`-nostdin`) and runs one thread;
//! - a wall-clock limit, after which the process is killed;
//! - an output size limit, after which it is killed too;
//! - an empty environment (only `PATH` and `LC_ALL=C`) and a working directory
//!   of its own that is removed afterwards.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::EncodeError;
use super::pcm::{PcmSource, to_i16};

/// Where the external programs are and how far they may go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tools {
    /// The `ffmpeg` program (a name looked up in `PATH`, or a path).
    pub ffmpeg: PathBuf,
    /// The `sox` program (AMR-NB encoding).
    pub sox: PathBuf,
    /// Longest one run may take, wall clock.
    pub timeout: Duration,
    /// Most bytes one run may write.
    pub max_output_bytes: u64,
}

impl Default for Tools {
    fn default() -> Self {
        Self {
            ffmpeg: PathBuf::from("ffmpeg"),
            sox: PathBuf::from("sox"),
            // A 5-minute note takes a few seconds; this only stops a stuck
            // or runaway process.
            timeout: Duration::from_secs(120),
            max_output_bytes: 64 * 1024 * 1024,
        }
    }
}

/// An external program an encode may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Program {
    /// FFmpeg: AAC (M4A) and the still-image MP4.
    Ffmpeg,
    /// SoX: AMR-NB output and AMR input.
    Sox,
}

impl Program {
    /// Its usual command name.
    pub fn name(self) -> &'static str {
        match self {
            Program::Ffmpeg => "ffmpeg",
            Program::Sox => "sox",
        }
    }

    /// The Debian package that installs it.
    pub fn package(self) -> &'static str {
        match self {
            Program::Ffmpeg => "ffmpeg",
            Program::Sox => "sox",
        }
    }
}

/// A program that cannot be run, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Missing {
    pub program: Program,
    /// What was looked for and not found, e.g. `sox not found on PATH`.
    pub reason: String,
}

impl Tools {
    /// The configured name or path of `program`.
    pub fn path(&self, program: Program) -> &Path {
        match program {
            Program::Ffmpeg => &self.ffmpeg,
            Program::Sox => &self.sox,
        }
    }

    /// Where `program` is: its configured path when that names a file (it
    /// has a `/`), else the first executable of that name in `PATH`, as
    /// [`run`] will find it.
    pub fn locate(&self, program: Program) -> Result<PathBuf, Missing> {
        let configured = self.path(program);
        let missing = |reason: String| Missing { program, reason };
        if configured.components().count() > 1 {
            return match std::fs::metadata(configured) {
                Ok(meta) if is_executable(&meta) => Ok(configured.to_owned()),
                Ok(_) => Err(missing(format!(
                    "{} is not an executable file",
                    configured.display()
                ))),
                Err(_) => Err(missing(format!("{} does not exist", configured.display()))),
            };
        }
        std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|dir| dir.join(configured))
            .find(|candidate| std::fs::metadata(candidate).is_ok_and(|m| is_executable(&m)))
            .ok_or_else(|| missing(format!("{} not found on PATH", configured.display())))
    }
}

/// A regular file someone may execute.
fn is_executable(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.is_file() && meta.permissions().mode() & 0o111 != 0
}

/// What a run reads on its standard input.
pub enum Input<'a> {
    /// Bytes already in memory (an AMR file for SoX to decode).
    Bytes(&'a [u8]),
    /// Audio as raw mono 16-bit little-endian PCM, written as it is
    /// decoded: the program encodes the beginning while the rest is being
    /// decoded. A decoding error kills the program and is returned instead
    /// of its output.
    Pcm(&'a mut dyn PcmSource),
}

/// Where a run's output goes.
#[derive(Debug, Clone, Copy)]
pub enum Output<'a> {
    /// Standard output.
    Stdout,
    /// A file of this name in the run's private directory (the arguments
    /// must name it as given).
    File(&'a str),
}

/// The Debian package that installs a program of ours.
fn package_of(program: &Path) -> &'static str {
    match program.file_name().and_then(|n| n.to_str()) {
        Some("sox") => "sox",
        _ => "ffmpeg",
    }
}

/// Run `program args…` with `input` on its standard input and return what it
/// wrote, within `tools`' limits.
pub fn run(
    tools: &Tools,
    program: &Path,
    args: &[OsString],
    input: Input<'_>,
    output: Output<'_>,
) -> Result<Vec<u8>, EncodeError> {
    let name = program.display().to_string();
    let tool_error = |reason: String| EncodeError::Tool {
        program: name.clone(),
        reason,
    };
    let workdir = tempfile::Builder::new()
        .prefix("telenet-media-")
        .tempdir()
        .map_err(|e| tool_error(format!("cannot create a working directory: {e}")))?;

    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(workdir.path())
        .env_clear()
        .env("LC_ALL", "C")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(EncodeError::ToolMissing {
                program: name,
                package: package_of(program),
            });
        }
        Err(e) => return Err(tool_error(format!("cannot start: {e}"))),
    };

    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        // Unreachable with Stdio::piped(); kill rather than leave it running.
        let _ = child.kill();
        let _ = child.wait();
        return Err(tool_error("standard streams were not opened".into()));
    };
    let child = Arc::new(Mutex::new(child));

    // The watchdog kills the process at the deadline unless told it ended.
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let timed_out = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watchdog = {
        let child = Arc::clone(&child);
        let timed_out = Arc::clone(&timed_out);
        let timeout = tools.timeout;
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = done_rx.recv_timeout(timeout) {
                timed_out.store(true, std::sync::atomic::Ordering::SeqCst);
                if let Ok(mut child) = child.lock() {
                    let _ = child.kill();
                }
            }
        })
    };

    let result = std::thread::scope(|scope| {
        let errors = scope.spawn(move || read_capped(stderr, 64 * 1024).map(|(b, _)| b));
        // Output is read on its own thread: the program may fill its output
        // pipe before it has read all its input.
        let reader = {
            let child = Arc::clone(&child);
            // Stdout is the output, or only a few messages.
            let (cap, is_output) = match output {
                Output::Stdout => (tools.max_output_bytes, true),
                Output::File(_) => (64 * 1024, false),
            };
            scope.spawn(move || {
                let read = read_capped(stdout, cap);
                if is_output
                    && let Ok((_, true)) = read
                    && let Ok(mut child) = child.lock()
                {
                    let _ = child.kill();
                }
                read
            })
        };
        let fed = feed(stdin, input);
        if fed.is_err()
            && let Ok(mut child) = child.lock()
        {
            let _ = child.kill();
        }
        let read = reader
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the reading thread panicked")));
        let read = match output {
            Output::Stdout => read,
            Output::File(_) => read.map(|_| (Vec::new(), false)),
        };
        let errors = errors.join().unwrap_or_else(|_| Ok(Vec::new()));
        (fed, read, errors)
    });
    // Polled rather than waited for with the lock held, so the watchdog
    // can still kill a process that closed its pipes but keeps running.
    let status = loop {
        let polled = match child.lock() {
            Ok(mut c) => c.try_wait(),
            Err(_) => break Err(()),
        };
        match polled {
            Ok(Some(status)) => break Ok(Ok(status)),
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => break Ok(Err(e)),
        }
    };
    let _ = done_tx.send(());
    let _ = watchdog.join();

    let (fed, read, errors) = result;
    // The input's own error (a packet that does not decode) is the reason
    // the program was killed.
    fed?;
    let stderr_tail = errors.map(|b| last_lines(&b)).unwrap_or_default();
    if timed_out.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(tool_error(format!(
            "killed after the time limit of {} s",
            tools.timeout.as_secs()
        )));
    }
    let (bytes, over) = read.map_err(|e| tool_error(format!("reading its output: {e}")))?;
    if over {
        return Err(tool_error(format!(
            "killed: output exceeded {} bytes",
            tools.max_output_bytes
        )));
    }
    match status {
        Ok(Ok(status)) if status.success() => {}
        Ok(Ok(status)) => {
            return Err(tool_error(format!("{status}: {stderr_tail}")));
        }
        Ok(Err(e)) => return Err(tool_error(format!("waiting for it: {e}"))),
        Err(_) => return Err(tool_error("process handle poisoned".into())),
    }
    match output {
        Output::Stdout => Ok(bytes),
        Output::File(file) => read_output_file(&workdir.path().join(file), tools, &tool_error),
    }
}

/// Write `input` to the program's standard input, then close it. A write
/// error means the program stopped reading (an error of its own, a limit,
/// or it has all it needs); its exit status tells which, so it ends the
/// input quietly.
fn feed(stdin: ChildStdin, input: Input<'_>) -> Result<(), EncodeError> {
    let mut stdin = io::BufWriter::with_capacity(64 * 1024, stdin);
    match input {
        Input::Bytes(bytes) => {
            let _ = stdin.write_all(bytes);
        }
        Input::Pcm(audio) => {
            let mut bytes = Vec::new();
            audio.pour(&mut |samples| {
                bytes.clear();
                bytes.extend(samples.iter().flat_map(|&s| to_i16(s).to_le_bytes()));
                stdin.write_all(&bytes).is_ok()
            })?;
        }
    }
    let _ = stdin.flush();
    Ok(())
}

fn read_output_file(
    path: &Path,
    tools: &Tools,
    tool_error: &dyn Fn(String) -> EncodeError,
) -> Result<Vec<u8>, EncodeError> {
    let file = std::fs::File::open(path)
        .map_err(|e| tool_error(format!("it wrote no output file: {e}")))?;
    let (bytes, over) = read_capped(file, tools.max_output_bytes)
        .map_err(|e| tool_error(format!("reading its output: {e}")))?;
    if over {
        return Err(tool_error(format!(
            "output exceeded {} bytes",
            tools.max_output_bytes
        )));
    }
    Ok(bytes)
}

/// Read to the end, keeping at most `cap` bytes; `true` when there was more.
fn read_capped(mut r: impl Read, cap: u64) -> io::Result<(Vec<u8>, bool)> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok((out, false)),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if out.len() as u64 + n as u64 > cap {
            return Ok((out, true));
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// The last few lines a program printed on stderr, for an error message.
fn last_lines(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(3)..].join(" | ");
    if tail.is_empty() {
        "no message".to_owned()
    } else {
        tail
    }
}

/// The FFmpeg arguments every run starts with: quiet, no terminal, one
/// thread, no allocation over 256 MiB.
pub fn ffmpeg_prelude() -> Vec<OsString> {
    [
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-max_alloc",
        "268435456",
        "-threads",
        "1",
        "-filter_threads",
        "1",
    ]
    .iter()
    .map(OsString::from)
    .collect()
}

/// Arguments that read raw mono 16-bit PCM at `rate` from standard input.
pub fn ffmpeg_pcm_input(rate: u32) -> Vec<OsString> {
    args(&[
        "-protocol_whitelist",
        "pipe",
        "-f",
        "s16le",
        "-ar",
        &rate.to_string(),
        "-ac",
        "1",
        "-i",
        "pipe:0",
    ])
}

/// The SoX arguments every run starts with: quiet, errors only.
pub fn sox_prelude() -> Vec<OsString> {
    args(&["--no-show-progress", "-V1"])
}

/// SoX arguments naming raw mono 16-bit signed PCM at `rate` on a pipe
/// (`-`): the form of all audio SoX reads from us or writes for us, as an
/// input (before the output's arguments) or an output (last).
pub fn sox_raw_pcm(rate: u32) -> Vec<OsString> {
    args(&[
        "-t",
        "raw",
        "-e",
        "signed-integer",
        "-b",
        "16",
        "-c",
        "1",
        "-r",
        &rate.to_string(),
        "-",
    ])
}

/// `&str`s as arguments.
pub fn args(list: &[&str]) -> Vec<OsString> {
    list.iter().map(OsString::from).collect()
}

/// Milliseconds since `start`, for logs.
pub fn elapsed_ms(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> (PathBuf, Vec<OsString>) {
        (PathBuf::from("sh"), args(&["-c", script]))
    }

    #[test]
    fn passes_stdin_through_and_returns_stdout() {
        let (p, a) = sh("cat");
        let out = run(
            &Tools::default(),
            &p,
            &a,
            Input::Bytes(b"hello"),
            Output::Stdout,
        );
        assert_eq!(out.ok().as_deref(), Some(&b"hello"[..]));
    }

    #[test]
    fn writes_audio_as_16_bit_pcm_while_it_comes() {
        let pcm = crate::encode::Pcm::new(8_000, vec![0.0, 0.5, -1.0, 2.0]);
        let (p, a) = sh("cat");
        let out = run(
            &Tools::default(),
            &p,
            &a,
            Input::Pcm(&mut &pcm),
            Output::Stdout,
        );
        let expected: Vec<u8> = [0i16, 16384, -32768, 32767]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        assert_eq!(out.ok(), Some(expected));
    }

    /// Audio that fails to decode after its first piece.
    struct Broken;

    impl PcmSource for Broken {
        fn rate(&self) -> u32 {
            8_000
        }
        fn sample_count(&self) -> usize {
            8_000
        }
        fn pour(&mut self, sink: &mut dyn FnMut(&[f32]) -> bool) -> Result<(), EncodeError> {
            sink(&[0.0; 160]);
            Err(EncodeError::Corrupt("packet 1 does not decode".into()))
        }
    }

    #[test]
    fn a_decoding_error_stops_the_program_and_is_the_answer() {
        // The program would run for 30 s: it is killed, not waited for.
        let (p, a) = sh("exec sleep 30");
        let start = Instant::now();
        let err = run(
            &Tools::default(),
            &p,
            &a,
            Input::Pcm(&mut Broken),
            Output::Stdout,
        )
        .err();
        assert!(start.elapsed() < Duration::from_secs(10));
        assert!(
            matches!(&err, Some(EncodeError::Corrupt(reason)) if reason.contains("packet 1")),
            "{err:?}"
        );
    }

    #[test]
    fn kills_a_process_that_runs_too_long() {
        let tools = Tools {
            timeout: Duration::from_millis(300),
            ..Tools::default()
        };
        // `exec`: the shell becomes `sleep`, so killing it ends the run
        // (FFmpeg and SoX are single processes too).
        let (p, a) = sh("exec sleep 30");
        let start = Instant::now();
        let err = run(&tools, &p, &a, Input::Bytes(b""), Output::Stdout).err();
        assert!(start.elapsed() < Duration::from_secs(10));
        assert!(
            matches!(&err, Some(EncodeError::Tool { reason, .. }) if reason.contains("time limit")),
            "{err:?}"
        );
    }

    #[test]
    fn kills_a_process_that_closes_its_pipes_and_keeps_running() {
        let tools = Tools {
            timeout: Duration::from_millis(300),
            ..Tools::default()
        };
        let (p, a) = sh("exec >&- 2>&- <&-; exec sleep 30");
        let start = Instant::now();
        let err = run(&tools, &p, &a, Input::Bytes(b""), Output::Stdout).err();
        assert!(start.elapsed() < Duration::from_secs(10));
        assert!(
            matches!(&err, Some(EncodeError::Tool { reason, .. }) if reason.contains("time limit")),
            "{err:?}"
        );
    }

    #[test]
    fn kills_a_process_that_writes_too_much() {
        let tools = Tools {
            max_output_bytes: 1000,
            ..Tools::default()
        };
        let (p, a) = sh("yes");
        let err = run(&tools, &p, &a, Input::Bytes(b""), Output::Stdout).err();
        assert!(
            matches!(&err, Some(EncodeError::Tool { reason, .. }) if reason.contains("exceeded")),
            "{err:?}"
        );
    }

    #[test]
    fn reports_exit_status_and_stderr() {
        let (p, a) = sh("echo 'bad input' >&2; exit 3");
        let err = run(&Tools::default(), &p, &a, Input::Bytes(b""), Output::Stdout)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("bad input") && err.contains('3'), "{err}");
    }

    #[test]
    fn a_missing_program_names_the_package() {
        let err = run(
            &Tools::default(),
            Path::new("telenet-no-such-ffmpeg"),
            &[],
            Input::Bytes(b""),
            Output::Stdout,
        )
        .err();
        assert!(
            matches!(err, Some(EncodeError::ToolMissing { .. })),
            "{err:?}"
        );
    }

    #[test]
    fn runs_in_an_empty_private_directory_with_a_clean_environment() {
        let (p, a) = sh(
            "ls -A | wc -l; env | grep -c -v -e '^PATH=' -e '^LC_ALL=' -e '^PWD=' -e '^SHLVL=' -e '^_=' || true",
        );
        let out =
            run(&Tools::default(), &p, &a, Input::Bytes(b""), Output::Stdout).unwrap_or_default();
        assert_eq!(
            String::from_utf8_lossy(&out)
                .split_whitespace()
                .collect::<Vec<_>>(),
            ["0", "0"]
        );
    }
}
