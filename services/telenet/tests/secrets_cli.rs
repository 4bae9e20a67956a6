//! `telenet secrets …` as an operator rotates the key channel secrets are
//! sealed with: the dev server seals with a key it keeps in its data
//! directory; `status` counts what each key seals; keys given in the
//! environment (one inline table, as the Helm chart passes them) with a new
//! current one are re-sealed under it by `reseal`; the old key can then go,
//! and the server started with the new key alone reads the channel; a
//! keyring missing a key in use makes `status` fail.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use telenet_proto::common::v1::ChannelKind;
use telenet_proto::ingress::v1::channels_client::ChannelsClient;
use telenet_proto::ingress::v1::{CreateChannelRequest, GetChannelRequest};

/// `telenet dev` on `data` with `env`, running until stopped.
struct Dev {
    child: Child,
    grpc: String,
    workspace: String,
}

impl Dev {
    fn start(data: &str, env: &[(&str, &str)]) -> Dev {
        let mut child = Command::new(env!("CARGO_BIN_EXE_telenet"))
            .args(["dev", "--data-dir", data])
            .args(["--grpc-listen", "127.0.0.1:0"])
            .args(["--webhook-listen", "127.0.0.1:0"])
            .args(["--gateway-listen", "127.0.0.1:0"])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .env("TELENET_LOG", "warn")
            .envs(env.iter().copied())
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
        let mut lines: Vec<String> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !lines.iter().any(|l| l.starts_with("token: ")) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(_) => {
                    let _ = child.kill();
                    panic!("no token line within 60 s; output so far: {lines:?}");
                }
            }
        }
        let value = |prefix: &str| {
            lines
                .iter()
                .find_map(|l| l.strip_prefix(prefix))
                .unwrap_or_else(|| panic!("no line {prefix:?} in {lines:?}"))
                .trim()
                .to_owned()
        };
        Dev {
            grpc: format!("http://{}", value("grpc: ")),
            workspace: value("workspace: "),
            child,
        }
    }

    async fn channels(&self) -> ChannelsClient<tonic::transport::Channel> {
        ChannelsClient::connect(self.grpc.clone())
            .await
            .expect("grpc")
    }

    fn stop(mut self) {
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

fn secrets(args: &[&str], data: &str, env: &[(&str, &str)]) -> (bool, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_telenet"))
        .arg("secrets")
        .args(args)
        .args(["--data-dir", data])
        .env("TELENET_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .expect("telenet secrets runs");
    (
        status.success(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// The line of `key` in a status table: its count and what it says.
fn row<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status
        .lines()
        .find(|l| l.split_whitespace().next() == Some(key))
}

#[tokio::test]
async fn an_operator_rotates_the_key_of_channel_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8 path");

    // The dev server seals with its local key.
    let dev = Dev::start(data, &[]);
    let created = dev
        .channels()
        .await
        .create_channel(CreateChannelRequest {
            workspace_id: dev.workspace.clone(),
            kind: ChannelKind::Custom as i32,
            name: "Shop".into(),
            outbound_url: "http://127.0.0.1:9/".into(),
            secret: String::new(),
            accepted_voice_types: vec![],
        })
        .await
        .expect("create")
        .into_inner();
    let channel = created.channel.expect("channel");
    dev.stop();
    let local = std::fs::read_to_string(dir.path().join("channel-secrets.key")).expect("local key");
    let local = local.trim();

    let (ok, status, stderr) = secrets(&["status"], data, &[]);
    assert!(ok, "{status}{stderr}");
    assert!(status.contains("current key: local"), "{status}");
    let local_row = row(&status, "local").unwrap_or_else(|| panic!("{status}"));
    assert!(
        local_row.contains(" 1 ") && local_row.ends_with("current"),
        "{status}"
    );

    // A new key, current, with the local one kept for reading: re-sealed.
    let generated = Command::new(env!("CARGO_BIN_EXE_telenet"))
        .args(["secrets", "generate-key"])
        .output()
        .expect("generate-key runs");
    assert!(generated.status.success());
    let new_key = String::from_utf8_lossy(&generated.stdout).trim().to_owned();
    assert_ne!(new_key, local);
    let both = format!("{{ local = \"{local}\", k2 = \"{new_key}\" }}");
    let rotated = [
        ("TELENET_INGRESS__ENCRYPTION__KEYS", both.as_str()),
        ("TELENET_INGRESS__ENCRYPTION__CURRENT_KEY", "k2"),
    ];
    let (ok, out, stderr) = secrets(&["reseal"], data, &rotated);
    assert!(ok, "{out}{stderr}");
    assert!(out.contains("re-sealed 1,"), "{out}");
    assert!(
        row(&out, "k2").is_some_and(|r| r.ends_with("current")),
        "{out}"
    );
    assert!(row(&out, "local").is_none(), "{out}");
    assert!(out.contains("(may be removed): local"), "{out}");
    for secret_bit in [&created.secret, local, new_key.as_str()] {
        assert!(!out.contains(secret_bit) && !stderr.contains(secret_bit));
    }

    // The new key alone: the server reads the channel's secret.
    let only_new = format!("{{ k2 = \"{new_key}\" }}");
    let only_new = [("TELENET_INGRESS__ENCRYPTION__KEYS", only_new.as_str())];
    let (ok, out, stderr) = secrets(&["status"], data, &only_new);
    assert!(ok, "{out}{stderr}");
    let dev = Dev::start(data, &only_new);
    let credentials = dev
        .channels()
        .await
        .get_channel_credentials(GetChannelRequest {
            workspace_id: dev.workspace.clone(),
            channel_id: channel.id.clone(),
        })
        .await
        .expect("credentials")
        .into_inner();
    assert_eq!(credentials.secret, created.secret);
    dev.stop();

    // A keyring without the key in use: status fails, naming the key.
    let other = format!("{{ k3 = \"{local}\" }}");
    let (ok, out, stderr) = secrets(
        &["status"],
        data,
        &[("TELENET_INGRESS__ENCRYPTION__KEYS", other.as_str())],
    );
    assert!(!ok, "{out}");
    assert!(
        row(&out, "k2").is_some_and(|r| r.contains("NOT IN THE KEYRING")),
        "{out}"
    );
    assert!(stderr.contains("sealed under keys not in"), "{stderr}");
}
