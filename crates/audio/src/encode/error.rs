//! What can go wrong turning a file into a profile's output.

/// A failed encode. [`EncodeError::is_permanent`] tells the problems of the
/// input (trying again gives the same answer) from those of this machine.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// A container or codec no decoder here reads.
    #[error("unsupported input: {0}")]
    UnsupportedInput(String),
    /// The bytes do not decode: truncated, damaged or not what they claim.
    #[error("corrupt input: {0}")]
    Corrupt(String),
    /// The file has no audio stream (or an empty one).
    #[error("the file has no audio")]
    NoAudio,
    /// Longer than this service transcodes.
    #[error("the audio is {actual_ms} ms long; at most {max_ms} ms are transcoded")]
    TooLong { actual_ms: u64, max_ms: u64 },
    /// The output cannot meet the profile's limits (parts, bytes).
    #[error("{0}")]
    DoesNotFit(String),
    /// An external encoder is not installed.
    #[error("`{program}` was not found; install it (Debian: apt-get install {package})")]
    ToolMissing {
        program: String,
        package: &'static str,
    },
    /// An external encoder failed, ran too long or wrote too much.
    #[error("{program}: {reason}")]
    Tool { program: String, reason: String },
    /// An in-process encoder refused its settings or input.
    #[error("encoder: {0}")]
    Encoder(String),
}

impl EncodeError {
    /// `true` when the input itself is the problem, so the same request will
    /// always fail the same way and the failure may be remembered.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            EncodeError::UnsupportedInput(_)
                | EncodeError::Corrupt(_)
                | EncodeError::NoAudio
                | EncodeError::TooLong { .. }
                | EncodeError::DoesNotFit(_)
        )
    }
}
