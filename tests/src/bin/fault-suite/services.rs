//! The services as separate processes (`telenet serve --service <name>`),
//! each under a supervisor that starts it again whenever it exits, as a
//! container runtime would: SIGKILLed by a fault, or dead at a crash point.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio_util::sync::CancellationToken;

use crate::lock;
use telenet_tests::infra::log_file;

/// The services, in the order they are started.
pub const NAMES: [&str; 7] = [
    "contacts",
    "conversations",
    "media",
    "reporting",
    "ingress",
    "dispatch",
    "gateway",
];

/// How a process ended.
#[derive(Debug, Clone)]
pub struct Exit {
    pub at: Instant,
    pub status: String,
    /// Killed by the suite (SIGKILL), rather than ending on its own.
    pub killed: bool,
}

struct Shared {
    name: &'static str,
    grpc_port: u16,
    telenet: PathBuf,
    config: PathBuf,
    log: PathBuf,
    /// Extra environment for the next starts, one entry per start.
    next_env: Mutex<VecDeque<Vec<(String, String)>>>,
    child: Mutex<Option<Child>>,
    kill_requested: Mutex<bool>,
    starts: AtomicU32,
    exits: Mutex<Vec<Exit>>,
}

impl Drop for Shared {
    /// The last handle gone (the run ended or was interrupted): the process
    /// goes too.
    fn drop(&mut self) {
        if let Some(mut child) = lock(&self.child).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One supervised service process.
#[derive(Clone)]
pub struct Service {
    shared: Arc<Shared>,
}

impl Service {
    /// Start `name` and keep it running until `stop` is cancelled.
    pub fn supervise(
        name: &'static str,
        grpc_port: u16,
        telenet: &Path,
        config: &Path,
        logs: &Path,
        stop: CancellationToken,
    ) -> Self {
        let shared = Arc::new(Shared {
            name,
            grpc_port,
            telenet: telenet.to_owned(),
            config: config.to_owned(),
            log: logs.join(format!("{name}.log")),
            next_env: Mutex::new(VecDeque::new()),
            child: Mutex::new(None),
            kill_requested: Mutex::new(false),
            starts: AtomicU32::new(0),
            exits: Mutex::new(Vec::new()),
        });
        tokio::spawn(supervise(shared.clone(), stop));
        Self { shared }
    }

    pub fn name(&self) -> &'static str {
        self.shared.name
    }

    pub fn grpc_port(&self) -> u16 {
        self.shared.grpc_port
    }

    /// Times the process was started.
    pub fn starts(&self) -> u32 {
        self.shared.starts.load(Ordering::SeqCst)
    }

    pub fn exits(&self) -> Vec<Exit> {
        lock(&self.shared.exits).clone()
    }

    /// SIGKILL the running process (the supervisor starts it again).
    /// Returns when the process is gone.
    pub async fn kill(&self) -> anyhow::Result<()> {
        let before = self.exits().len();
        {
            *lock(&self.shared.kill_requested) = true;
            let mut child = lock(&self.shared.child);
            match child.as_mut() {
                Some(c) => c.kill().context("SIGKILL")?,
                None => bail!("{} is not running", self.name()),
            }
        }
        self.until_exits(before, Duration::from_secs(10)).await
    }

    /// Stop the running process gracefully (SIGTERM: it drains and exits)
    /// and start it again with `env` added for that one start.
    pub async fn restart_with(&self, env: Vec<(String, String)>) -> anyhow::Result<()> {
        lock(&self.shared.next_env).push_back(env);
        let pid = lock(&self.shared.child).as_ref().map(Child::id);
        let Some(pid) = pid else {
            bail!("{} is not running", self.name());
        };
        let before = self.exits().len();
        telenet_tests::infra::run(
            {
                let mut c = Command::new("kill");
                c.args(["-TERM", &pid.to_string()]);
                c
            },
            "kill -TERM",
        )
        .await?;
        self.until_exits(before, Duration::from_secs(30)).await
    }

    /// Wait until the process exited after the `before`-th exit.
    pub async fn until_exits(&self, before: usize, within: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        while self.exits().len() <= before {
            if tokio::time::Instant::now() > deadline {
                bail!("{} did not exit within {within:?}", self.name());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Wait until the process answers its gRPC health check as SERVING
    /// (the service's readiness: its database and the broker answer).
    pub async fn until_ready(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if ready(self.name(), self.grpc_port()).await {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "{} is not ready after {within:?} (log: {})",
                    self.name(),
                    self.shared.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stop the process for good (end of the run): SIGKILL, so the run
    /// ends quickly; everything it held is the broker's and database's.
    pub fn kill_now(&self) {
        if let Some(child) = lock(&self.shared.child).as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether the process on `port` reports `telenet.<name>` SERVING; a
/// service without a readiness check (the gateway) counts as ready when the
/// process is live.
async fn ready(name: &str, port: u16) -> bool {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let Ok(endpoint) = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
    else {
        return false;
    };
    let endpoint = endpoint
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(2));
    let Ok(channel) = endpoint.connect().await else {
        return false;
    };
    let client = HealthClient::new(channel);
    let ask = |service: String| {
        let mut client = client.clone();
        async move {
            client
                .check(HealthCheckRequest { service })
                .await
                .map(|r| r.into_inner().status())
        }
    };
    match ask(format!("telenet.{name}")).await {
        Ok(status) => status == ServingStatus::Serving,
        Err(s) if s.code() == tonic::Code::NotFound => {
            matches!(ask(String::new()).await, Ok(ServingStatus::Serving))
        }
        Err(_) => false,
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(9)) => "SIGKILL".into(),
        (None, Some(6)) => "SIGABRT (crash point)".into(),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => status.to_string(),
    }
}

async fn supervise(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        if stop.is_cancelled() {
            return;
        }
        let env = lock(&shared.next_env).pop_front().unwrap_or_default();
        match spawn(&shared, &env) {
            Ok(child) => {
                shared.starts.fetch_add(1, Ordering::SeqCst);
                *lock(&shared.child) = Some(child);
            }
            Err(e) => {
                eprintln!("fault-suite: cannot start {}: {e:#}", shared.name);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
        let status = loop {
            let exited = lock(&shared.child).as_mut().map(Child::try_wait);
            match exited {
                Some(Ok(Some(status))) => break describe(status),
                Some(Err(e)) => break format!("lost: {e}"),
                Some(Ok(None)) => {}
                None => break "gone".into(),
            }
            tokio::select! {
                () = stop.cancelled() => {
                    if let Some(mut child) = lock(&shared.child).take() {
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                    return;
                }
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        };
        lock(&shared.child).take();
        let killed = std::mem::take(&mut *lock(&shared.kill_requested));
        lock(&shared.exits).push(Exit {
            at: Instant::now(),
            status,
            killed,
        });
        // A moment before the restart, as a container runtime takes.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn spawn(shared: &Shared, env: &[(String, String)]) -> anyhow::Result<Child> {
    use std::io::Write as _;
    let (out, err) = log_file(&shared.log)?;
    if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(&shared.log) {
        let _ = writeln!(
            f,
            "===== fault-suite: starting {} {env:?} =====",
            shared.name
        );
    }
    let mut command = Command::new(&shared.telenet);
    command
        .arg("serve")
        .arg("--config")
        .arg(&shared.config)
        .arg("--service")
        .arg(shared.name)
        .arg("--grpc-listen")
        .arg(format!("127.0.0.1:{}", shared.grpc_port))
        .env_remove("FAILPOINTS")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    for (k, v) in env {
        command.env(k, v);
    }
    command
        .spawn()
        .with_context(|| format!("spawning {}", shared.telenet.display()))
}
