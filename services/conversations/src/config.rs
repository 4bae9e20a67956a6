use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Conversations service settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Events handled at once by each consumer.
    pub consumer_concurrency: usize,
    /// Longest reply text, in characters.
    pub max_text_chars: usize,
    /// How long a channel's credentials (for its reply window) are kept
    /// before ingress is asked again (`0s`: ask every time).
    #[serde(with = "telenet_kit::config::duration")]
    pub directory_cache_ttl: Duration,
    /// Time allowed for a lookup in the channel directory.
    #[serde(with = "telenet_kit::config::duration")]
    pub directory_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            consumer_concurrency: 16,
            max_text_chars: 4096 * 4,
            directory_cache_ttl: Duration::from_secs(30),
            directory_timeout: Duration::from_secs(2),
        }
    }
}
