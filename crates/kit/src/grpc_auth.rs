//! Who may call what on a gRPC server (docs/security.md).
//!
//! Every call is authorised by one tower layer ([`GrpcServer::with_security`])
//! before it reaches a handler. The caller is one of:
//!
//! - **a TELENET service**, named by its client certificate
//!   (`<service>.telenet.internal`, checked during the TLS handshake against
//!   the installation's CA; [`crate::tls`]). Services act for any workspace
//!   and may call every method.
//! - **a caller on a plaintext port**: the dev server (loopback only) or a
//!   server whose operator allowed plaintext because the network
//!   authenticates callers (`grpc_tls.allow_plaintext`). Trusted like a
//!   service.
//! - **a platform client**: another team's internal service, presenting
//!   `authorization: Bearer <secret>` whose SHA-256 is listed, with the
//!   workspaces it may act for, in the platform clients file
//!   ([`GrpcAuthConfig::clients_file`]). It may call methods whose request
//!   names a workspace (field 1, `workspace_id`, read from the encoded
//!   request without knowing its type) when that workspace is one of its
//!   own, and the few methods open to every caller (catalogs, reflection).
//!   Methods only services may call (creating workspaces, authenticating
//!   and minting tokens, reading channel secrets) and methods whose request
//!   names no workspace are refused to it.
//!
//! Anyone else is refused with UNAUTHENTICATED. A platform client naming a
//! workspace it may not act for, or calling a method reserved to services,
//! is refused with PERMISSION_DENIED: the answer is the same whether the
//! workspace exists or not, so it tells nothing about other tenants. Health
//! checks need no authentication.
//!
//! Where a request names its workspace is read from the descriptor sets the
//! server is given: field 1 of the request message when it is `string
//! workspace_id`, or field 1 of the message in its field 1 (an upload's
//! header). Every message of a stream is checked, not only the first. A
//! field of that path sent twice, a compressed message, or one that does
//! not decode is refused rather than guessed at.
//!
//! [`GrpcServer::with_security`]: crate::grpc::GrpcServer::with_security

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf as _, Bytes, BytesMut};
use http_body::Frame;
use http_body_util::BodyExt as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic::body::Body;
use tower::{Layer, Service};

use crate::config::duration;
use crate::error::{ErrorCode, ServiceError, to_status};
use crate::tls::{Tls, TlsPeer};

/// Requests under this path need no authentication.
const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";

/// Services every server mounts itself, open to any authenticated caller.
const REFLECTION_SERVICES: [&str; 2] = [
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// The largest request message a platform client's call is read in full
/// to find its workspace (gRPC's own default limit).
const MAX_INSPECTED_MESSAGE: usize = 4 * 1024 * 1024;

/// Platform clients (`grpc_auth.*`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcAuthConfig {
    /// TOML file listing the platform clients (`[[clients]]` with `name`,
    /// `token_sha256`, the hex SHA-256 of its bearer secret, and
    /// `workspaces`, the ids it may act for); see docs/security.md. Empty:
    /// no platform clients, only the services themselves may call.
    pub clients_file: PathBuf,
    /// How often the platform clients file is read again; a changed file
    /// applies to the next calls, without a restart (0: read once, at
    /// start).
    #[serde(with = "duration")]
    pub reload_interval: Duration,
}

impl Default for GrpcAuthConfig {
    fn default() -> Self {
        Self {
            clients_file: PathBuf::new(),
            reload_interval: Duration::from_secs(30),
        }
    }
}

// ---------------------------------------------------------------------------
// Platform clients

/// One platform client.
pub struct PlatformClient {
    /// Its name, for logs.
    pub name: String,
    workspaces: HashSet<String>,
    token_sha256: [u8; 32],
}

impl std::fmt::Debug for PlatformClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlatformClient")
            .field("name", &self.name)
            .field("workspaces", &self.workspaces.len())
            .finish_non_exhaustive()
    }
}

impl PlatformClient {
    /// Whether it may act for `workspace`.
    pub fn may_act_for(&self, workspace: &str) -> bool {
        self.workspaces.contains(workspace)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientsFile {
    #[serde(default)]
    clients: Vec<ClientEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientEntry {
    name: String,
    token_sha256: String,
    #[serde(default)]
    workspaces: Vec<String>,
}

/// Why the platform clients file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ClientsError {
    /// The file could not be read.
    #[error("grpc_auth.clients_file: cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Its content is unusable.
    #[error("grpc_auth.clients_file: {}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

fn parse_clients(text: &str) -> Result<Vec<Arc<PlatformClient>>, String> {
    use figment::providers::{Format as _, Toml};
    let file: ClientsFile = figment::Figment::from(Toml::string(text))
        .extract()
        .map_err(|e| e.to_string())?;
    let mut names = HashSet::new();
    let mut hashes = HashSet::new();
    let mut clients = Vec::new();
    for entry in file.clients {
        let name = entry.name.trim().to_owned();
        if name.is_empty() {
            return Err("a client without a name".into());
        }
        if !names.insert(name.clone()) {
            return Err(format!("client {name:?} is listed twice"));
        }
        let mut token_sha256 = [0u8; 32];
        hex::decode_to_slice(entry.token_sha256.trim(), &mut token_sha256).map_err(|_| {
            format!(
                "client {name:?}: token_sha256 must be 64 hex digits (the SHA-256 of its secret)"
            )
        })?;
        if !hashes.insert(token_sha256) {
            return Err(format!(
                "client {name:?} has the same secret as another client"
            ));
        }
        let workspaces = entry
            .workspaces
            .iter()
            .map(|w| w.trim().to_owned())
            .filter(|w| !w.is_empty())
            .collect();
        clients.push(Arc::new(PlatformClient {
            name,
            workspaces,
            token_sha256,
        }));
    }
    Ok(clients)
}

struct ClientTable {
    raw: Vec<u8>,
    clients: Vec<Arc<PlatformClient>>,
}

struct ClientsInner {
    path: PathBuf,
    reload_interval: Duration,
    current: RwLock<Arc<ClientTable>>,
}

/// The platform clients, read again when their file changes. Cheap to
/// clone.
#[derive(Clone)]
pub struct PlatformClients {
    inner: Arc<ClientsInner>,
}

impl std::fmt::Debug for PlatformClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlatformClients")
            .field("clients_file", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl PlatformClients {
    /// The clients of `config`'s file; `None` when no file is configured.
    pub fn from_config(config: &GrpcAuthConfig) -> Result<Option<Self>, ClientsError> {
        if config.clients_file.as_os_str().is_empty() {
            return Ok(None);
        }
        let path = config.clients_file.clone();
        let table = Self::load(&path)?;
        Ok(Some(Self {
            inner: Arc::new(ClientsInner {
                path,
                reload_interval: config.reload_interval,
                current: RwLock::new(Arc::new(table)),
            }),
        }))
    }

    fn load(path: &std::path::Path) -> Result<ClientTable, ClientsError> {
        let raw = std::fs::read(path).map_err(|source| ClientsError::Read {
            path: path.to_owned(),
            source,
        })?;
        let invalid = |reason: String| ClientsError::Invalid {
            path: path.to_owned(),
            reason,
        };
        let text = std::str::from_utf8(&raw).map_err(|e| invalid(e.to_string()))?;
        let clients = parse_clients(text).map_err(invalid)?;
        Ok(ClientTable { raw, clients })
    }

    fn current(&self) -> Arc<ClientTable> {
        self.inner
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The client whose secret is `token`. Every client is compared, in
    /// constant time, whichever matches.
    pub fn authenticate(&self, token: &str) -> Option<Arc<PlatformClient>> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let table = self.current();
        let mut found = None;
        for client in &table.clients {
            let matches = bool::from(client.token_sha256.ct_eq(&digest));
            if matches && found.is_none() {
                found = Some(client.clone());
            }
        }
        found
    }

    /// Reads the file again; `Ok(true)` when it changed and loaded.
    pub fn reload(&self) -> Result<bool, ClientsError> {
        let raw = std::fs::read(&self.inner.path).map_err(|source| ClientsError::Read {
            path: self.inner.path.clone(),
            source,
        })?;
        if raw == self.current().raw {
            return Ok(false);
        }
        let table = Self::load(&self.inner.path)?;
        *self
            .inner
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(table);
        Ok(true)
    }

    /// Reloads every [`GrpcAuthConfig::reload_interval`] until `token` is
    /// cancelled; a file that does not load is logged (once until the
    /// failure changes) and the previous clients kept.
    pub async fn watch(self, token: CancellationToken) {
        let interval = self.inner.reload_interval;
        crate::reload::every(&self, interval, token).await;
    }
}

impl crate::reload::Reload for PlatformClients {
    type Error = ClientsError;

    fn reload(&self) -> Result<bool, ClientsError> {
        PlatformClients::reload(self)
    }

    fn changed(&self) {
        tracing::info!(clients_file = %self.inner.path.display(), clients = self.current().clients.len(), "platform clients reloaded");
    }

    fn failed(&self, error: &ClientsError) {
        tracing::warn!(%error, "platform clients not reloaded; the previous ones stay");
    }
}

// ---------------------------------------------------------------------------
// Callers

/// Who made a call, in the request's extensions once it is authorised.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A TELENET service, named by its certificate.
    Service(Arc<str>),
    /// A caller on a plaintext port, trusted like a service.
    Plaintext,
    /// A platform client.
    Platform(Arc<PlatformClient>),
}

/// Why a call was refused.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error(
        "unauthenticated: present a client certificate naming a TELENET service, or a platform client's bearer secret"
    )]
    NoCredential,
    #[error("unauthenticated: unknown platform client credential")]
    UnknownCredential,
    #[error(
        "platform client {client:?} may not call {method}: it is reserved to TELENET's services"
    )]
    InternalOnly { client: String, method: String },
    #[error("platform client {client:?} may not act for workspace {workspace:?}")]
    Workspace { client: String, workspace: String },
    #[error("platform client {client:?}: the request names no workspace")]
    NoWorkspace { client: String },
    #[error("platform client {client:?}: {reason}")]
    Unreadable {
        client: String,
        reason: &'static str,
    },
    #[error(
        "platform client {client:?}: a request message is larger than {MAX_INSPECTED_MESSAGE} bytes"
    )]
    TooLarge { client: String },
}

impl ServiceError for Refused {
    fn code(&self) -> ErrorCode {
        match self {
            Refused::NoCredential | Refused::UnknownCredential => ErrorCode::Unauthenticated,
            Refused::InternalOnly { .. }
            | Refused::Workspace { .. }
            | Refused::NoWorkspace { .. } => ErrorCode::PermissionDenied,
            Refused::Unreadable { .. } => ErrorCode::InvalidArgument,
            Refused::TooLarge { .. } => ErrorCode::PayloadTooLarge,
        }
    }
}

fn refuse(refused: &Refused, path: &str) -> Status {
    match refused {
        Refused::NoCredential | Refused::UnknownCredential => {
            tracing::debug!(method = path, reason = %refused, "grpc call refused");
        }
        _ => tracing::info!(method = path, reason = %refused, "grpc call refused"),
    }
    to_status(refused)
}

// ---------------------------------------------------------------------------
// Methods

/// What a platform client may do with one method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Call it whatever its request says (catalogs, reflection).
    Open,
    /// Nothing: only services may call it.
    InternalOnly,
    /// Call it for its own workspaces: the request's workspace id is the
    /// string at this path of field numbers in every request message.
    Workspace(Vec<u32>),
}

/// Where each method's request names its workspace (field 1 `string
/// workspace_id`, or that field of the message in field 1), by method path
/// (`/package.Service/Method`); `None` for a request that names none. Read
/// from encoded `FileDescriptorSet`s; undecodable sets add nothing.
pub fn workspace_fields(sets: &[&[u8]]) -> BTreeMap<String, Option<Vec<u32>>> {
    use prost::Message as _;
    use prost_types::field_descriptor_proto::Type;

    fn collect(
        prefix: &str,
        messages: &[prost_types::DescriptorProto],
        out: &mut HashMap<String, prost_types::DescriptorProto>,
    ) {
        for message in messages {
            let name = format!("{prefix}.{}", message.name());
            collect(&name, &message.nested_type, out);
            out.insert(name, message.clone());
        }
    }

    let files: Vec<_> = sets
        .iter()
        .filter_map(|set| prost_types::FileDescriptorSet::decode(*set).ok())
        .flat_map(|set| set.file)
        .collect();
    let mut messages = HashMap::new();
    for file in &files {
        let prefix = if file.package().is_empty() {
            String::new()
        } else {
            format!(".{}", file.package())
        };
        collect(&prefix, &file.message_type, &mut messages);
    }
    let field_one = |message: &str| {
        messages
            .get(message)
            .and_then(|m| m.field.iter().find(|f| f.number() == 1))
    };
    let is_workspace_id = |f: &prost_types::FieldDescriptorProto| {
        f.name() == "workspace_id" && f.r#type() == Type::String
    };
    let workspace_path = |input: &str| -> Option<Vec<u32>> {
        let first = field_one(input)?;
        if is_workspace_id(first) {
            return Some(vec![1]);
        }
        if first.r#type() == Type::Message
            && field_one(first.type_name()).is_some_and(is_workspace_id)
        {
            return Some(vec![1, 1]);
        }
        None
    };

    let mut out = BTreeMap::new();
    for file in &files {
        for service in &file.service {
            let full = if file.package().is_empty() {
                service.name().to_owned()
            } else {
                format!("{}.{}", file.package(), service.name())
            };
            for method in &service.method {
                out.insert(
                    format!("/{full}/{}", method.name()),
                    workspace_path(method.input_type()),
                );
            }
        }
    }
    out
}

/// Every method's [`Access`] for platform clients.
#[derive(Debug, Default)]
struct Rules {
    methods: HashMap<String, Access>,
}

impl Rules {
    fn new(sets: &[&[u8]], internal_only: &[String], open: &[String]) -> Self {
        let methods = workspace_fields(sets)
            .into_iter()
            .map(|(method, path)| {
                let access = if internal_only.contains(&method) {
                    Access::InternalOnly
                } else if open.contains(&method)
                    || REFLECTION_SERVICES.iter().any(|s| method.starts_with(s))
                {
                    Access::Open
                } else {
                    // A request without a workspace is not the client's to
                    // make: closed unless listed as open.
                    path.map_or(Access::InternalOnly, Access::Workspace)
                };
                (method, access)
            })
            .collect();
        Self { methods }
    }

    /// Unknown methods are closed.
    fn access(&self, method: &str) -> Access {
        self.methods
            .get(method)
            .cloned()
            .unwrap_or(Access::InternalOnly)
    }
}

// ---------------------------------------------------------------------------
// Security of a server

/// How a [`GrpcServer`](crate::grpc::GrpcServer) authenticates its callers
/// and what it lets platform clients do; see the module docs. The default is
/// plaintext with every caller trusted (the dev server, tests).
#[derive(Debug, Clone, Default)]
pub struct GrpcSecurity {
    pub(crate) tls: Option<Tls>,
    pub(crate) identities: Vec<String>,
    clients: Option<PlatformClients>,
    internal_only: Vec<String>,
    open: Vec<String>,
}

impl GrpcSecurity {
    /// Plaintext: callers are trusted like services, except those that
    /// present a platform client's credential.
    pub fn plaintext() -> Self {
        Self::default()
    }

    /// Mutual TLS with `tls`; a client certificate valid for
    /// `<identity>.telenet.internal`, for one of `identities` (the
    /// services' names), is that service.
    pub fn tls(tls: Tls, identities: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            tls: Some(tls),
            identities: identities.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// Accepts these platform clients.
    pub fn with_platform_clients(mut self, clients: Option<PlatformClients>) -> Self {
        self.clients = clients;
        self
    }

    /// Methods (`/package.Service/Method`) only services may call.
    pub fn internal_only<S: AsRef<str>>(mut self, methods: &[S]) -> Self {
        self.internal_only
            .extend(methods.iter().map(|m| m.as_ref().to_owned()));
        self
    }

    /// Methods platform clients may call whatever workspace, if any, their
    /// request names.
    pub fn open_to_platform_clients<S: AsRef<str>>(mut self, methods: &[S]) -> Self {
        self.open
            .extend(methods.iter().map(|m| m.as_ref().to_owned()));
        self
    }

    /// Whether calls come over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

struct AuthState {
    tls: bool,
    clients: Option<PlatformClients>,
    rules: Rules,
}

impl AuthState {
    /// Who is calling, from the connection and the request's metadata.
    fn caller(&self, request: &http::Request<Body>) -> Result<Caller, Refused> {
        if self.tls {
            let identity = request
                .extensions()
                .get::<TlsPeer>()
                .and_then(|peer| peer.identity.clone());
            if let Some(identity) = identity {
                return Ok(Caller::Service(identity));
            }
        }
        match bearer(request.headers()) {
            Some(token) => self
                .clients
                .as_ref()
                .and_then(|clients| clients.authenticate(token))
                .map(Caller::Platform)
                .ok_or(Refused::UnknownCredential),
            None if self.tls => Err(Refused::NoCredential),
            None => Ok(Caller::Plaintext),
        }
    }
}

/// The secret of an `authorization: Bearer …` header.
fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

/// Authorises every call; see the module docs.
#[derive(Clone)]
pub(crate) struct AuthLayer {
    state: Arc<AuthState>,
}

impl AuthLayer {
    pub(crate) fn new(security: &GrpcSecurity, sets: &[&[u8]]) -> Self {
        Self {
            state: Arc::new(AuthState {
                tls: security.tls.is_some(),
                clients: security.clients.clone(),
                rules: Rules::new(sets, &security.internal_only, &security.open),
            }),
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            state: self.state.clone(),
        }
    }
}

/// The service of [`AuthLayer`].
#[derive(Clone)]
pub(crate) struct Auth<S> {
    inner: S,
    state: Arc<AuthState>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S> Service<http::Request<Body>> for Auth<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<http::Response<Body>, Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let path = request.uri().path().to_owned();
        if path.starts_with(HEALTH_PREFIX) {
            return Box::pin(self.inner.call(request));
        }
        let caller = match self.state.caller(&request) {
            Ok(caller) => caller,
            Err(refused) => return answer(refuse(&refused, &path)),
        };
        // Handlers never see the secret.
        request.headers_mut().remove(http::header::AUTHORIZATION);
        request.extensions_mut().insert(caller.clone());
        let Caller::Platform(client) = caller else {
            return Box::pin(self.inner.call(request));
        };
        let fields = match self.state.rules.access(&path) {
            Access::Open => return Box::pin(self.inner.call(request)),
            Access::InternalOnly => {
                let refused = Refused::InternalOnly {
                    client: client.name.clone(),
                    method: path.clone(),
                };
                return answer(refuse(&refused, &path));
            }
            Access::Workspace(fields) => fields,
        };
        // The ready service answers this call; a clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let mut checked = Checked::new(body, fields, client.clone());
            let first = match checked.frame().await {
                Some(Ok(first)) => first,
                Some(Err(status)) => return Ok(status.into_http()),
                None => {
                    return Ok(refuse(
                        &Refused::NoWorkspace {
                            client: client.name.clone(),
                        },
                        &path,
                    )
                    .into_http());
                }
            };
            let body = Body::new(Prefixed {
                first: Some(first),
                rest: checked,
            });
            inner.call(http::Request::from_parts(parts, body)).await
        })
    }
}

fn answer(status: Status) -> BoxFuture<http::Response<Body>, Infallible> {
    Box::pin(std::future::ready(Ok(status.into_http())))
}

// ---------------------------------------------------------------------------
// Reading the workspace from encoded requests

/// Why an encoded message could not be read.
#[derive(Debug, PartialEq, Eq)]
enum WireError {
    /// It does not decode.
    Malformed,
    /// A field of the path occurs more than once.
    Repeated,
}

fn varint(cursor: &mut &[u8]) -> Result<u64, WireError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = cursor.split_first().ok_or(WireError::Malformed)?;
        *cursor = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(WireError::Malformed)
}

fn take<'a>(cursor: &mut &'a [u8], len: u64) -> Result<&'a [u8], WireError> {
    let len = usize::try_from(len).map_err(|_| WireError::Malformed)?;
    if cursor.len() < len {
        return Err(WireError::Malformed);
    }
    let (value, rest) = cursor.split_at(len);
    *cursor = rest;
    Ok(value)
}

/// The string at `path` (field numbers, outermost first) of an encoded
/// message, as prost decodes it: `None` when absent. A field of the path
/// sent more than once is refused rather than resolved (protobuf's "last
/// one wins" and merging would make the answer depend on the decoder).
fn string_at<'a>(message: &'a [u8], path: &[u32]) -> Result<Option<&'a str>, WireError> {
    let Some((&wanted, rest)) = path.split_first() else {
        return Err(WireError::Malformed);
    };
    let mut cursor = message;
    let mut found = None;
    while !cursor.is_empty() {
        let key = varint(&mut cursor)?;
        let number = key >> 3;
        if number == 0 {
            return Err(WireError::Malformed);
        }
        let is_wanted = number == u64::from(wanted);
        match key & 7 {
            2 => {
                let len = varint(&mut cursor)?;
                let value = take(&mut cursor, len)?;
                if is_wanted {
                    if found.is_some() {
                        return Err(WireError::Repeated);
                    }
                    found = Some(value);
                }
            }
            // The wanted field is a string or a message: any other wire
            // type for it does not decode.
            _ if is_wanted => return Err(WireError::Malformed),
            0 => {
                varint(&mut cursor)?;
            }
            1 => {
                take(&mut cursor, 8)?;
            }
            5 => {
                take(&mut cursor, 4)?;
            }
            // Groups, unknown wire types: not in proto3 requests.
            _ => return Err(WireError::Malformed),
        }
    }
    match found {
        None => Ok(None),
        Some(value) if rest.is_empty() => std::str::from_utf8(value)
            .map(Some)
            .map_err(|_| WireError::Malformed),
        Some(value) => string_at(value, rest),
    }
}

/// A platform client's request body, passed on one whole message at a time
/// once the message's workspace is found to be the client's own.
struct Checked {
    inner: Body,
    fields: Vec<u32>,
    client: Arc<PlatformClient>,
    buffer: BytesMut,
    messages: usize,
    trailers: Option<http::HeaderMap>,
    ended: bool,
}

impl Checked {
    fn new(inner: Body, fields: Vec<u32>, client: Arc<PlatformClient>) -> Self {
        Self {
            inner,
            fields,
            client,
            buffer: BytesMut::new(),
            messages: 0,
            trailers: None,
            ended: false,
        }
    }

    fn refused(&self, refused: Refused) -> Status {
        tracing::info!(reason = %refused, "grpc call refused");
        to_status(&refused)
    }

    /// The next whole message in the buffer (with its 5-byte prefix),
    /// checked; `None` until one is complete.
    fn next_message(&mut self) -> Result<Option<Bytes>, Status> {
        if self.buffer.len() < 5 {
            return Ok(None);
        }
        let client = self.client.name.clone();
        if self.buffer[0] != 0 {
            return Err(self.refused(Refused::Unreadable {
                client,
                reason: "compressed request messages are not accepted",
            }));
        }
        let len = u32::from_be_bytes([
            self.buffer[1],
            self.buffer[2],
            self.buffer[3],
            self.buffer[4],
        ]);
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > MAX_INSPECTED_MESSAGE {
            return Err(self.refused(Refused::TooLarge { client }));
        }
        if self.buffer.len() - 5 < len {
            return Ok(None);
        }
        let message = self.buffer.split_to(5 + len).freeze();
        let workspace = match string_at(&message[5..], &self.fields) {
            Ok(workspace) => workspace.unwrap_or_default(),
            Err(WireError::Repeated) => {
                return Err(self.refused(Refused::Unreadable {
                    client,
                    reason: "the request names its workspace more than once",
                }));
            }
            Err(WireError::Malformed) => {
                return Err(self.refused(Refused::Unreadable {
                    client,
                    reason: "the request does not decode",
                }));
            }
        };
        let first = self.messages == 0;
        self.messages += 1;
        // The first message must name the workspace; later ones (an
        // upload's chunks) may leave it out, but not name another.
        if workspace.is_empty() {
            if first {
                return Err(self.refused(Refused::NoWorkspace { client }));
            }
        } else if !self.client.may_act_for(workspace) {
            return Err(self.refused(Refused::Workspace {
                client,
                workspace: workspace.to_owned(),
            }));
        }
        Ok(Some(message))
    }
}

impl http_body::Body for Checked {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        loop {
            if let Some(message) = this.next_message()? {
                return Poll::Ready(Some(Ok(Frame::data(message))));
            }
            if this.ended {
                if this.buffer.has_remaining() {
                    return Poll::Ready(Some(Err(this.refused(Refused::Unreadable {
                        client: this.client.name.clone(),
                        reason: "the request ends inside a message",
                    }))));
                }
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => this.buffer.extend_from_slice(&data),
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            this.trailers = Some(trailers);
                        }
                    }
                },
                Poll::Ready(Some(Err(status))) => return Poll::Ready(Some(Err(status))),
                Poll::Ready(None) => this.ended = true,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// The first message, already read and checked, then the rest.
struct Prefixed {
    first: Option<Frame<Bytes>>,
    rest: Checked,
}

impl http_body::Body for Prefixed {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        Pin::new(&mut this.rest).poll_frame(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A field's key.
    fn key(number: u32, wire: u8) -> Vec<u8> {
        let mut out = Vec::new();
        let mut value = (u64::from(number) << 3) | u64::from(wire);
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    }

    fn string_field(number: u32, value: &[u8]) -> Vec<u8> {
        let mut out = key(number, 2);
        out.push(u8::try_from(value.len()).expect("short"));
        out.extend_from_slice(value);
        out
    }

    #[test]
    fn reads_the_workspace_wherever_field_one_is() {
        let message = [
            string_field(2, b"conversation"),
            key(3, 0),
            vec![0x96, 0x01],
            string_field(1, b"ws-a"),
            key(4, 5),
            vec![0, 0, 0, 0],
            key(5, 1),
            vec![0; 8],
        ]
        .concat();
        assert_eq!(string_at(&message, &[1]), Ok(Some("ws-a")));
        assert_eq!(string_at(&string_field(2, b"x"), &[1]), Ok(None));
        assert_eq!(string_at(&[], &[1]), Ok(None));
    }

    #[test]
    fn reads_the_workspace_of_a_header_in_field_one() {
        let header = [string_field(1, b"ws-a"), string_field(2, b"audio/ogg")].concat();
        let upload = string_field(1, &header);
        assert_eq!(string_at(&upload, &[1, 1]), Ok(Some("ws-a")));
        let chunk = string_field(2, b"bytes");
        assert_eq!(string_at(&chunk, &[1, 1]), Ok(None));
    }

    #[test]
    fn ambiguous_or_broken_messages_are_refused() {
        // Protobuf lets the last of two win; the layer does not guess.
        let twice = [string_field(1, b"ws-a"), string_field(1, b"ws-b")].concat();
        assert_eq!(string_at(&twice, &[1]), Err(WireError::Repeated));
        let header_twice = [
            string_field(1, &string_field(1, b"ws-a")),
            string_field(1, &string_field(1, b"ws-b")),
        ]
        .concat();
        assert_eq!(string_at(&header_twice, &[1, 1]), Err(WireError::Repeated));
        let inner_twice = string_field(1, &twice);
        assert_eq!(string_at(&inner_twice, &[1, 1]), Err(WireError::Repeated));
        // Field 1 as a number: not a string.
        let number = [key(1, 0), vec![7]].concat();
        assert_eq!(string_at(&number, &[1]), Err(WireError::Malformed));
        // Truncated, a group, invalid UTF-8.
        let truncated = &string_field(1, b"ws-a")[..3];
        assert_eq!(string_at(truncated, &[1]), Err(WireError::Malformed));
        let group = [key(7, 3), key(7, 4)].concat();
        assert_eq!(string_at(&group, &[1]), Err(WireError::Malformed));
        assert_eq!(
            string_at(&string_field(1, &[0xff, 0xfe]), &[1]),
            Err(WireError::Malformed)
        );
    }

    #[test]
    fn clients_file_is_checked() {
        let hash = hex::encode(Sha256::digest(b"secret-a"));
        let ok = format!(
            "[[clients]]\nname = \"billing\"\ntoken_sha256 = \"{hash}\"\nworkspaces = [\"ws-a\"]\n"
        );
        let clients = parse_clients(&ok).expect("parses");
        assert_eq!(clients.len(), 1);
        assert!(clients[0].may_act_for("ws-a"));
        assert!(!clients[0].may_act_for("ws-b"));

        let twice = format!("{ok}{}", ok.replace("billing", "crm"));
        assert!(
            parse_clients(&twice)
                .expect_err("same secret")
                .contains("same secret")
        );
        let short = ok.replace(&hash, "abc");
        assert!(
            parse_clients(&short)
                .expect_err("short hash")
                .contains("64 hex")
        );
        let unknown = format!("{ok}scopes = [\"x\"]\n");
        assert!(parse_clients(&unknown).is_err(), "unknown key");
        assert!(parse_clients("").expect("empty file").is_empty());
    }

    #[test]
    fn bearer_secrets_are_read_from_authorization() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(
            http::header::AUTHORIZATION,
            "Bearer abc".parse().expect("v"),
        );
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(
            http::header::AUTHORIZATION,
            "bearer  abc ".parse().expect("v"),
        );
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(http::header::AUTHORIZATION, "Basic abc".parse().expect("v"));
        assert_eq!(bearer(&headers), None);
        headers.insert(http::header::AUTHORIZATION, "Bearer ".parse().expect("v"));
        assert_eq!(bearer(&headers), None);
    }
}
