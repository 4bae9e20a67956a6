//! The `telenet` command as a newcomer uses it: `telenet dev` prints where
//! things listen and a token on a `token: …` line; the token works at the
//! gateway; data (and the token) survive a restart; `--ephemeral` keeps
//! nothing; a wrong configuration key is named; `telenet healthcheck`
//! answers with its exit code; with `TELENET_LOG_FORMAT=json` every log line
//! is JSON.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Dev {
    child: Child,
    lines: Vec<String>,
}

impl Dev {
    fn start(args: &[&str]) -> Dev {
        let mut child = Command::new(env!("CARGO_BIN_EXE_telenet"))
            .arg("dev")
            .args([
                "--grpc-listen",
                "127.0.0.1:0",
                "--webhook-listen",
                "127.0.0.1:0",
                "--gateway-listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            .args(args)
            .env("TELENET_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("telenet dev starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut lines = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !lines.iter().any(|l: &String| l.starts_with("token: ")) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(_) => {
                    let _ = child.kill();
                    panic!("no token line within 60 s; output so far: {lines:?}");
                }
            }
        }
        Dev { child, lines }
    }

    fn value(&self, prefix: &str) -> String {
        self.lines
            .iter()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no line {prefix:?} in {:?}", self.lines))
            .trim()
            .to_owned()
    }

    fn stop(mut self) {
        // SIGTERM: a graceful stop.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "telenet dev exited with {status}");
                return;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("telenet dev did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

async fn me(gateway: &str, token: &str) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .get(format!("{gateway}/v1/me"))
        .bearer_auth(token)
        .send()
        .await
        .expect("gateway answers");
    (r.status().as_u16(), r.json().await.expect("json"))
}

#[tokio::test]
async fn dev_prints_a_token_and_keeps_data_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8 path");
    let first = Dev::start(&["--data-dir", data]);
    let token = first.value("token: ");
    let gateway = first.value("gateway: ");
    let (status, who) = me(&gateway, &token).await;
    assert_eq!(status, 200, "{who}");
    let created = reqwest::Client::new()
        .post(format!("{gateway}/v1/channels"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"kind": "custom", "name": "Kept", "outbound_url": "http://127.0.0.1:9/"}))
        .send()
        .await
        .expect("create channel");
    assert_eq!(created.status(), 201);
    first.stop();

    let second = Dev::start(&["--data-dir", data]);
    assert_eq!(
        second.value("token: "),
        token,
        "the same workspace and token after a restart"
    );
    let gateway = second.value("gateway: ");
    let (status, again) = me(&gateway, &token).await;
    assert_eq!(status, 200);
    assert_eq!(again["user_id"], who["user_id"]);
    let channels: serde_json::Value = reqwest::Client::new()
        .get(format!("{gateway}/v1/channels"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(channels["items"][0]["name"], "Kept");
    second.stop();
}

#[tokio::test]
async fn ephemeral_keeps_nothing() {
    let one = Dev::start(&["--ephemeral"]);
    let data = one.value("data: ");
    let token = one.value("token: ");
    assert!(std::path::Path::new(&data).exists());
    one.stop();
    assert!(
        !std::path::Path::new(&data).exists(),
        "{data} removed at exit"
    );
    let two = Dev::start(&["--ephemeral"]);
    assert_ne!(two.value("token: "), token);
    two.stop();
}

#[test]
fn a_wrong_configuration_key_is_named() {
    let out = Command::new(env!("CARGO_BIN_EXE_telenet"))
        .args(["dev", "--ephemeral"])
        .env("TELENET_INGRESS__LISTN", "127.0.0.1:1")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ingress.listn") && err.contains("TELENET_INGRESS__LISTN"),
        "{err}"
    );
}

#[tokio::test]
async fn create_workspace_talks_to_a_running_conversations_service() {
    let dev = Dev::start(&["--ephemeral"]);
    let grpc = dev.value("grpc: ");
    let gateway = dev.value("gateway: ");
    let out = Command::new(env!("CARGO_BIN_EXE_telenet"))
        .args([
            "create-workspace",
            "--name",
            "Acme",
            "--owner-name",
            "Olga",
            "--owner-email",
            "olga@acme.test",
        ])
        .env("TELENET_ENDPOINTS__CONVERSATIONS", format!("http://{grpc}"))
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let token = stdout
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .expect("token line")
        .to_owned();
    let (status, who) = me(&gateway, &token).await;
    assert_eq!(status, 200);
    assert_eq!(who["email"], "olga@acme.test");
    assert_eq!(who["access_level"], "owner");
    let bad = Command::new(env!("CARGO_BIN_EXE_telenet"))
        .args([
            "create-workspace",
            "--name",
            "",
            "--owner-name",
            "O",
            "--owner-email",
            "not-an-email",
        ])
        .env("TELENET_ENDPOINTS__CONVERSATIONS", format!("http://{grpc}"))
        .output()
        .expect("runs");
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("invalid"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    dev.stop();
}

fn healthcheck(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_telenet"))
        .arg("healthcheck")
        .args(args)
        .output()
        .expect("telenet healthcheck runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn healthcheck_passes_against_a_running_server_and_fails_once_it_stopped() {
    let dev = Dev::start(&["--ephemeral"]);
    let grpc = dev.value("grpc: ");

    let (ok, err) = healthcheck(&["--grpc", &grpc]);
    assert!(ok, "liveness: {err}");
    // Readiness follows the dependency checks, which start at once.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (ok, err) = healthcheck(&["--grpc", &grpc, "--service", "telenet.dispatch"]);
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "never ready: {err}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (ok, err) = healthcheck(&["--grpc", &grpc, "--service", "telenet.nothing"]);
    assert!(!ok, "an unknown service is not serving");
    assert!(err.contains("telenet.nothing"), "{err}");

    // The dev server says where its metrics are, and they answer.
    let metrics = dev.value("metrics: ");
    let scraped = reqwest::get(&metrics)
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("metrics text");
    assert!(scraped.contains("telenet_build_info"), "{scraped}");

    dev.stop();
    let started = Instant::now();
    let (ok, err) = healthcheck(&["--grpc", &grpc, "--timeout", "2s"]);
    assert!(!ok, "a stopped server is not healthy");
    assert!(err.starts_with("error: ") && err.contains(&grpc), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "bounded by the timeout"
    );
}

/// Runs `telenet serve --service contacts` with JSON logs until it logged
/// `until`, then stops it; returns every line it wrote to stdout and stderr.
fn serve_with_json_logs(
    env: &[(&str, &str)],
    until: &str,
) -> (std::process::ExitStatus, Vec<String>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_telenet"))
        .args(["serve", "--service", "contacts"])
        .env("TELENET_LOG_FORMAT", "json")
        .env("TELENET_LOG", "info")
        .env("TELENET_DATA_DIR", dir.path())
        .env("TELENET_GRPC_LISTEN", "127.0.0.1:0")
        .env("TELENET_METRICS_LISTEN", "127.0.0.1:0")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("telenet serve starts");
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let readers: Vec<_> = [
        Box::new(stdout) as Box<dyn std::io::Read + Send>,
        Box::new(stderr),
    ]
    .into_iter()
    .map(|stream| {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        })
    })
    .collect();
    drop(tx);
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !lines.iter().any(|l: &String| l.contains(until)) {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => lines.push(line),
            // Both streams closed: the process ended by itself.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                panic!("{until:?} not logged within 60 s: {lines:?}");
            }
        }
    }
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let status = child.wait().expect("telenet exits");
    for reader in readers {
        let _ = reader.join();
    }
    lines.extend(rx.try_iter());
    (status, lines)
}

fn parse_json_lines(lines: &[String]) -> Vec<serde_json::Value> {
    lines
        .iter()
        .map(
            |line| match serde_json::from_str::<serde_json::Value>(line) {
                Ok(value) if value.is_object() => value,
                _ => panic!("not a JSON log line: {line:?}\nall output: {lines:?}"),
            },
        )
        .collect()
}

#[test]
fn json_logs_are_json_from_start_to_stop() {
    let (status, lines) = serve_with_json_logs(&[], "grpc server listening");
    assert!(status.success(), "{status}: {lines:?}");
    let logs = parse_json_lines(&lines);
    let messages: Vec<&str> = logs.iter().filter_map(|l| l["message"].as_str()).collect();
    for expected in [
        "grpc server listening",
        "shutting down",
        "grpc server stopped",
    ] {
        assert!(messages.contains(&expected), "{expected:?} in {messages:?}");
    }
    assert!(
        logs.iter()
            .all(|l| l["level"].is_string() && l["timestamp"].is_string())
    );
}

#[test]
fn a_fatal_error_is_logged_as_json_too() {
    let (status, lines) =
        serve_with_json_logs(&[("TELENET_BUS_URL", "nowhere://bus")], "telenet stopped");
    assert!(!status.success(), "{lines:?}");
    let logs = parse_json_lines(&lines);
    let fatal = logs
        .iter()
        .find(|l| l["message"] == "telenet stopped")
        .expect("the fatal error is logged");
    assert_eq!(fatal["level"], "ERROR");
    assert!(
        fatal["error"]
            .as_str()
            .is_some_and(|e| e.contains("unsupported bus url")),
        "{fatal}"
    );
}

/// The README runs the product with `cargo run -- dev`; the package has
/// several binaries, so it must name the default one or cargo refuses.
#[test]
fn the_readme_run_command_finds_the_binary() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("../../README.md")).expect("README.md");
    assert!(
        readme.contains("cargo run -- dev"),
        "README no longer says `cargo run -- dev`"
    );
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
    assert!(
        manifest
            .lines()
            .any(|l| l.trim() == "default-run = \"telenet\""),
        "services/telenet/Cargo.toml needs `default-run = \"telenet\"` for `cargo run -- dev`"
    );
    assert_eq!(
        env!("CARGO_BIN_EXE_telenet").rsplit('/').next(),
        Some("telenet"),
        "the default binary is `telenet`"
    );
}
