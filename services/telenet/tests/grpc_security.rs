//! The whole suite behind mutual TLS, as the Helm chart runs it: the
//! services call each other over TLS with the process's certificate (the
//! dev seed creates a workspace, the gateway authenticates tokens and
//! creates channels), a platform client is held to its workspace (two
//! workspaces), methods reserved to services are refused to it, callers
//! without credentials are refused, and probes get the health service
//! alone in plaintext. Without TLS, `telenet dev` refuses to serve gRPC
//! beyond loopback and `telenet serve` refuses unless told otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use telenet::{Config, ServiceName, Suite};
use telenet_kit::grpc::ClientConfig;
use telenet_kit::tls::{ClientCerts, GrpcTlsConfig, Tls};
use telenet_proto::conversations::v1::members_client::MembersClient;
use telenet_proto::conversations::v1::{CreateWorkspaceRequest, ListMembersRequest};
use tokio_util::sync::CancellationToken;
use tonic::Code;

const SECRET: &str = "the-billing-team-secret";

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new() -> Ca {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "telenet test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("ca");
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// Certificate, key and CA files for `names` in `dir`.
    fn files(&self, dir: &Path, names: &[&str]) -> GrpcTlsConfig {
        std::fs::create_dir_all(dir).expect("dir");
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .expect("names");
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("cert");
        let paths: [PathBuf; 3] = ["tls.crt", "tls.key", "ca.crt"].map(|f| dir.join(f));
        for (path, text) in paths
            .iter()
            .zip([cert.pem(), key.serialize_pem(), self.pem.clone()])
        {
            std::fs::write(path, text).expect("write");
        }
        let [cert_file, key_file, ca_file] = paths;
        GrpcTlsConfig {
            cert_file,
            key_file,
            ca_file,
            reload_interval: Duration::from_millis(50),
            allow_plaintext: false,
        }
    }
}

fn write_clients(path: &Path, workspaces: &[&str]) {
    use sha2::Digest as _;
    let hash = hex::encode(sha2::Sha256::digest(SECRET.as_bytes()));
    let list = workspaces
        .iter()
        .map(|w| format!("{w:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    std::fs::write(
        path,
        format!(
            "[[clients]]\nname = \"billing\"\ntoken_sha256 = \"{hash}\"\nworkspaces = [{list}]\n"
        ),
    )
    .expect("clients file");
}

fn members(addr: std::net::SocketAddr, tls: &Tls) -> MembersClient<tonic::transport::Channel> {
    let channel = telenet_kit::grpc::channel_with(
        &format!("https://{addr}"),
        &ClientConfig::default(),
        Some(tls),
    )
    .expect("channel");
    MembersClient::new(channel)
}

fn list_members(workspace: &str, token: Option<&str>) -> tonic::Request<ListMembersRequest> {
    let mut request = tonic::Request::new(ListMembersRequest {
        workspace_id: workspace.to_owned(),
    });
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii"),
        );
    }
    request
}

fn create_workspace(token: Option<&str>) -> tonic::Request<CreateWorkspaceRequest> {
    let mut request = tonic::Request::new(CreateWorkspaceRequest {
        name: "Other".into(),
        owner_name: "Other owner".into(),
        owner_email: "other@example.com".into(),
    });
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii"),
        );
    }
    request
}

#[tokio::test]
async fn the_suite_over_mutual_tls_with_a_platform_client() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new();
    let clients_file = dir.path().join("clients.toml");
    write_clients(&clients_file, &[]);

    let mut config = Config {
        data_dir: dir.path().join("data"),
        grpc_listen: "127.0.0.1:0".into(),
        grpc_health_listen: "127.0.0.1:0".into(),
        metrics_listen: String::new(),
        // One process, one certificate: it names a service and the address
        // the process reaches itself at.
        grpc_tls: ca.files(
            &dir.path().join("pod"),
            &["127.0.0.1", "conversations.telenet.internal"],
        ),
        ..Config::default()
    };
    config.grpc_auth.clients_file = clients_file.clone();
    config.grpc_auth.reload_interval = Duration::from_millis(50);
    config.ingress.listen = "127.0.0.1:0".into();
    config.gateway.listen = ([127, 0, 0, 1], 0).into();
    config.check_grpc_transport(false).expect("TLS anywhere");

    let token = CancellationToken::new();
    // The seed creates its workspace through CreateWorkspace over TLS.
    let running = Suite::new(config, ServiceName::ALL)
        .start(token.clone())
        .await
        .expect("suite starts");
    let seed = running.seed.clone().expect("seeded");
    let addr = running.grpc_addr;

    // The gateway reaches conversations (Authenticate) and ingress
    // (CreateChannel) over TLS as a service.
    let gateway = format!("http://{}", running.gateway_addr.expect("gateway"));
    let http = reqwest::Client::new();
    let me = http
        .get(format!("{gateway}/v1/me"))
        .bearer_auth(&seed.token)
        .send()
        .await
        .expect("gateway");
    assert_eq!(me.status(), 200);
    let channel = http
        .post(format!("{gateway}/v1/channels"))
        .bearer_auth(&seed.token)
        .json(&serde_json::json!({"kind": "custom", "name": "Shop", "outbound_url": "https://receiver.example/in"}))
        .send()
        .await
        .expect("create channel");
    assert_eq!(channel.status(), 201);

    // A service certificate acts for any workspace, privileged methods too.
    let service = Tls::from_config(
        &ca.files(&dir.path().join("svc"), &["gateway.telenet.internal"]),
        ClientCerts::Required,
    )
    .expect("loads")
    .expect("tls");
    let other = members(addr, &service)
        .create_workspace(create_workspace(None))
        .await
        .expect("a service creates a workspace")
        .into_inner()
        .workspace
        .expect("workspace")
        .id;

    // A platform client: a certificate from the CA naming no service, and
    // the secret; allowed the seeded workspace once the file says so.
    let platform = Tls::from_config(
        &ca.files(&dir.path().join("billing"), &["billing.example.com"]),
        ClientCerts::Required,
    )
    .expect("loads")
    .expect("tls");
    let mut as_billing = members(addr, &platform);
    write_clients(&clients_file, &[&seed.workspace_id]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match as_billing
            .list_members(list_members(&seed.workspace_id, Some(SECRET)))
            .await
        {
            Ok(found) => {
                let members = found.into_inner().members;
                assert_eq!(members.len(), 1, "{members:?}");
                assert_eq!(members[0].user_id, seed.user_id);
                break;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the changed clients file never applied"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let status = as_billing
        .list_members(list_members(&other, Some(SECRET)))
        .await
        .expect_err("the other workspace");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let status = as_billing
        .create_workspace(create_workspace(Some(SECRET)))
        .await
        .expect_err("reserved to services");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let status = as_billing
        .list_members(list_members(&seed.workspace_id, None))
        .await
        .expect_err("no credential");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    // Probes: the health service alone, in plaintext.
    let probe = telenet_kit::grpc::channel(
        &running
            .grpc_health_addr
            .expect("health listener")
            .to_string(),
        &ClientConfig::default(),
    )
    .expect("channel");
    tonic_health::pb::health_client::HealthClient::new(probe)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health in plaintext");

    running.shutdown().await;
}

/// `telenet <command> --grpc-listen <addr>` with nothing else configured:
/// its exit status and output.
fn run(command: &str, grpc_listen: &str, env: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().expect("dir");
    let output = Command::new(env!("CARGO_BIN_EXE_telenet"))
        .arg(command)
        .args([
            "--data-dir",
            dir.path().to_str().expect("utf-8"),
            "--grpc-listen",
            grpc_listen,
            "--webhook-listen",
            "127.0.0.1:0",
            "--gateway-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "",
        ])
        .envs(env.iter().copied())
        .env("TELENET_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn plaintext_grpc_beyond_loopback_is_refused() {
    let (ok, text) = run("dev", "0.0.0.0:0", &[]);
    assert!(!ok, "dev started: {text}");
    assert!(
        text.contains("only on a loopback address") && text.contains("grpc_tls.cert_file"),
        "{text}"
    );
    let (ok, text) = run(
        "dev",
        "0.0.0.0:0",
        &[("TELENET_GRPC_TLS__ALLOW_PLAINTEXT", "true")],
    );
    assert!(!ok, "dev started: {text}");

    let (ok, text) = run("serve", "0.0.0.0:0", &[]);
    assert!(!ok, "serve started: {text}");
    assert!(
        text.contains("needs mutual TLS") && text.contains("grpc_tls.allow_plaintext"),
        "{text}"
    );
}
