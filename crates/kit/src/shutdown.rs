//! Process lifecycle: a cancellation token cancelled on SIGINT/SIGTERM, and
//! binding listeners with errors that say which address failed.
//!
//! The token is created in `main` and passed down; nothing here is global,
//! so the dev server can run many services under one token and tests can
//! cancel them without signals.

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Spawns a task that cancels `token` on the first SIGINT (Ctrl-C) or SIGTERM
/// (Kubernetes stopping the pod), so everything holding the token starts its
/// graceful shutdown.
///
/// A second signal exits the process immediately with status 130: a stuck
/// drain must not leave a developer's terminal or a pod hanging until
/// SIGKILL. If the token is cancelled some other way first, the task keeps
/// only that second-signal duty.
pub fn on_signal(token: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        tokio::select! {
            () = signal() => {
                tracing::info!("shutdown signal received; draining (signal again to exit now)");
                token.cancel();
            }
            () = token.cancelled() => {}
        }
        signal().await;
        tracing::warn!("second shutdown signal; exiting without draining");
        std::process::exit(130);
    })
}

/// Resolves on SIGINT or SIGTERM. If a handler cannot be installed (no
/// signal support in a sandbox), that signal is simply not awaited.
async fn signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };

    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();

    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}

/// A listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on `{addr}`: {source}")]
pub struct BindError {
    /// The address as given.
    pub addr: String,
    /// The underlying error (in use, permission denied, unresolvable name…).
    #[source]
    pub source: std::io::Error,
}

/// Binds a TCP listener on `addr` (`host:port`; port 0 picks a free port,
/// which tests read back with `local_addr`).
pub async fn bind(addr: &str) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr).await.map_err(|source| BindError {
        addr: addr.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bind_picks_a_free_port() {
        let listener = bind("127.0.0.1:0").await.expect("bind");
        assert_ne!(listener.local_addr().expect("addr").port(), 0);
    }

    #[tokio::test]
    async fn bind_error_names_the_address() {
        let taken = bind("127.0.0.1:0").await.expect("bind");
        let addr = taken.local_addr().expect("addr").to_string();
        let error = bind(&addr).await.expect_err("port in use");
        assert!(error.to_string().contains(&addr), "{error}");

        let error = bind("not an address").await.expect_err("unparsable");
        assert!(error.to_string().contains("`not an address`"), "{error}");
    }

    #[tokio::test]
    async fn signal_task_stays_out_of_the_way_when_cancelled_elsewhere() {
        let token = CancellationToken::new();
        let task = on_signal(token.clone());
        token.cancel();
        tokio::task::yield_now().await;
        assert!(!task.is_finished(), "keeps waiting for a second signal");
        task.abort();
    }
}
