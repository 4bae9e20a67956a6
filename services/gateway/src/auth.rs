//! Bearer-token authentication against the members service, with a short
//! cache so a burst of requests from one agent costs one upstream call.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use sha2::{Digest, Sha256};
use telenet_proto::conversations::v1::members_client::MembersClient;
use telenet_proto::conversations::v1::{AccessLevel, AuthenticateRequest, Member};

use crate::AppState;
use crate::error::ApiError;

/// Past this many cached tokens, expired entries are swept; if the cache is
/// still full, it is emptied. Bounds memory against a flood of random tokens.
const MAX_CACHED_TOKENS: usize = 10_000;

/// The longest bearer token accepted; anything longer is not ours.
const MAX_TOKEN_LEN: usize = 4096;

/// Header carrying the request id (set by the request-id layer) that is
/// forwarded to upstream services for log correlation.
pub(crate) const REQUEST_ID_HEADER: &str = "x-request-id";

/// The authenticated member making a request. Its workspace scopes every
/// upstream call.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The member the token belongs to.
    pub member: Member,
    /// The request id, forwarded upstream as `x-request-id` metadata.
    request_id: Option<HeaderValue>,
}

impl Caller {
    /// The caller's workspace.
    pub fn workspace_id(&self) -> &str {
        &self.member.workspace_id
    }

    /// The caller's user id.
    pub fn user_id(&self) -> &str {
        &self.member.user_id
    }

    /// Whether the caller manages the workspace (owner or manager).
    pub fn is_manager(&self) -> bool {
        matches!(
            AccessLevel::try_from(self.member.access_level),
            Ok(AccessLevel::Owner | AccessLevel::Manager)
        )
    }

    /// A gRPC request carrying `message`, the request id and the trace
    /// context (so the upstream call joins this request's trace).
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = telenet_kit::telemetry::grpc_request(message);
        if let Some(id) = self
            .request_id
            .as_ref()
            .and_then(|id| id.to_str().ok())
            .and_then(|id| id.parse().ok())
        {
            request.metadata_mut().insert(REQUEST_ID_HEADER, id);
        }
        request
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer_token(parts)?;
        let request_id = parts.headers.get(REQUEST_ID_HEADER).cloned();
        let member = state
            .auth
            .authenticate(state, token, request_id.as_ref())
            .await?;
        Ok(Caller { member, request_id })
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer_token(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or(ApiError::MissingToken)?;
    let value = value.to_str().map_err(|_| ApiError::InvalidToken)?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(ApiError::MissingToken)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::MissingToken);
    }
    let token = token.trim();
    let well_formed = !token.is_empty()
        && token.len() <= MAX_TOKEN_LEN
        && token.bytes().all(|b| b.is_ascii_graphic());
    if well_formed {
        Ok(token)
    } else {
        Err(ApiError::InvalidToken)
    }
}

/// What the members service said about one token.
#[derive(Debug, Clone)]
struct Cached {
    at: Instant,
    /// `None`: the token is unknown or revoked.
    member: Option<Member>,
}

/// Token → member, for `ttl`. Keyed by the token's SHA-256 so no token sits
/// in memory in the clear longer than its request. Unknown tokens are cached
/// too (a random token never becomes valid), so retrying with a bad token
/// does not hammer the members service. A revoked token keeps working for up
/// to `ttl`.
#[derive(Debug)]
pub(crate) struct AuthCache {
    ttl: Duration,
    entries: Mutex<HashMap<[u8; 32], Cached>>,
}

impl AuthCache {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<[u8; 32], Cached>> {
        // Every update is a single insert, so a panic elsewhere cannot leave
        // the map inconsistent.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The member `token` belongs to, from the cache or the members service.
    async fn authenticate(
        &self,
        state: &AppState,
        token: &str,
        request_id: Option<&HeaderValue>,
    ) -> Result<Member, ApiError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if !self.ttl.is_zero() {
            let cached = self.lock().get(&key).cloned();
            if let Some(cached) = cached.filter(|c| c.at.elapsed() < self.ttl) {
                return cached.member.ok_or(ApiError::InvalidToken);
            }
        }

        let mut request = telenet_kit::telemetry::grpc_request(AuthenticateRequest {
            token: token.to_owned(),
        });
        if let Some(id) = request_id
            .and_then(|id| id.to_str().ok())
            .and_then(|id| id.parse().ok())
        {
            request.metadata_mut().insert(REQUEST_ID_HEADER, id);
        }
        let mut client = MembersClient::new(state.upstreams.members.clone());
        let member = match state.call(client.authenticate(request)).await {
            Ok(member) => Some(member),
            Err(ApiError::Upstream(status)) if is_refusal(status.code()) => None,
            // Not an answer about the token: do not cache, let it surface
            // as 503/504/500.
            Err(other) => return Err(other),
        };
        if member
            .as_ref()
            .is_some_and(|m| m.workspace_id.is_empty() || m.user_id.is_empty())
        {
            return Err(ApiError::Incomplete("the member's workspace or user id"));
        }
        if !self.ttl.is_zero() {
            self.remember(
                key,
                Cached {
                    at: Instant::now(),
                    member: member.clone(),
                },
            );
        }
        member.ok_or(ApiError::InvalidToken)
    }

    fn remember(&self, key: [u8; 32], cached: Cached) {
        let mut entries = self.lock();
        if entries.len() >= MAX_CACHED_TOKENS {
            let ttl = self.ttl;
            entries.retain(|_, c| c.at.elapsed() < ttl);
            if entries.len() >= MAX_CACHED_TOKENS {
                entries.clear();
            }
        }
        entries.insert(key, cached);
    }
}

/// Codes by which the members service says "this token is not valid".
fn is_refusal(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unauthenticated | tonic::Code::InvalidArgument | tonic::Code::NotFound
    )
}
