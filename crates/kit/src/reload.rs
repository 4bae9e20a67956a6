//! Files read again on a timer (certificates, the platform clients' table):
//! one loop, so every such file behaves the same — a change is picked up
//! within one interval, and a file that no longer loads is reported once
//! (until the failure changes) while the previous contents stay in use.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// What a reloading source reports after each read.
pub trait Reload {
    /// The error of a read that did not load.
    type Error: std::fmt::Display;

    /// Reads the source again; `Ok(true)` when it changed and is now in use.
    fn reload(&self) -> Result<bool, Self::Error>;

    /// Logs a change that took effect.
    fn changed(&self);

    /// Logs a read that did not load (the previous contents stay in use).
    fn failed(&self, error: &Self::Error);
}

/// Calls [`Reload::reload`] every `interval` until `token` is cancelled;
/// a zero interval never reloads. A failure is passed to [`Reload::failed`]
/// only when it differs from the previous one, so a file left broken is
/// reported once, not every interval.
pub async fn every<R: Reload>(source: &R, interval: Duration, token: CancellationToken) {
    if interval.is_zero() {
        return;
    }
    let mut last_error: Option<String> = None;
    loop {
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        match source.reload() {
            Ok(changed) => {
                if changed {
                    source.changed();
                }
                last_error = None;
            }
            Err(error) => {
                let text = error.to_string();
                if last_error.as_deref() != Some(text.as_str()) {
                    source.failed(&error);
                }
                last_error = Some(text);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Mutex, PoisonError};

    use super::*;

    /// A source whose reads are scripted, recording what was reported.
    struct Script {
        reads: Mutex<Vec<Result<bool, String>>>,
        log: Mutex<Vec<String>>,
        done: CancellationToken,
    }

    impl Reload for Script {
        type Error = String;

        fn reload(&self) -> Result<bool, String> {
            let mut reads = self.reads.lock().unwrap_or_else(PoisonError::into_inner);
            if reads.len() == 1 {
                self.done.cancel();
            }
            reads.remove(0)
        }

        fn changed(&self) {
            self.log
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push("changed".into());
        }

        fn failed(&self, error: &String) {
            self.log
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(format!("failed: {error}"));
        }
    }

    #[tokio::test]
    async fn a_failure_is_reported_once_until_it_changes() {
        let done = CancellationToken::new();
        let script = Script {
            reads: Mutex::new(vec![
                Ok(false),
                Ok(true),
                Err("bad pem".into()),
                Err("bad pem".into()),
                Err("missing".into()),
                Ok(false),
                Err("missing".into()),
            ]),
            log: Mutex::new(Vec::new()),
            done: done.clone(),
        };
        every(&script, Duration::from_millis(1), done).await;
        assert_eq!(
            *script.log.lock().unwrap_or_else(PoisonError::into_inner),
            [
                "changed",
                "failed: bad pem",
                "failed: missing",
                "failed: missing"
            ]
        );
        assert!(
            script
                .reads
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_zero_interval_never_reads() {
        let script = Script {
            reads: Mutex::new(vec![Err("read".into())]),
            log: Mutex::new(Vec::new()),
            done: CancellationToken::new(),
        };
        every(&script, Duration::ZERO, CancellationToken::new()).await;
        assert_eq!(
            script
                .reads
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len(),
            1
        );
    }
}
