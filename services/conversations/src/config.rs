use serde::{Deserialize, Serialize};

/// Conversations service settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Events handled at once by each consumer.
    pub consumer_concurrency: usize,
    /// Longest reply text, in characters.
    pub max_text_chars: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            consumer_concurrency: 16,
            max_text_chars: 4096 * 4,
        }
    }
}
