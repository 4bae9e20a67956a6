//! Bearer-token authentication against the members service, with a short
//! cache so a burst of requests from one agent costs one upstream call.

use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use sha2::{Digest, Sha256};
use telenet_kit::cache::TtlCache;
use telenet_proto::conversations::v1::members_client::MembersClient;
use telenet_proto::conversations::v1::{AccessLevel, AuthenticateRequest, Member};

use crate::AppState;
use crate::error::ApiError;

/// Most tokens remembered at once; past it the least recently used goes.
/// Bounds memory against a flood of random tokens.
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

    /// A gRPC request carrying `message` and the request id (the client
    /// stack adds the trace context).
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        request_with_id(message, self.request_id.as_ref())
    }
}

/// A gRPC request carrying `message` and the caller's `x-request-id`.
fn request_with_id<T>(message: T, request_id: Option<&HeaderValue>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(id) = request_id
        .and_then(|id| id.to_str().ok())
        .and_then(|id| id.parse().ok())
    {
        request.metadata_mut().insert(REQUEST_ID_HEADER, id);
    }
    request
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
        if let Some(limits) = &state.limits {
            // Counted by the token's hash: no token is kept in the store.
            limits
                .check(&TokenCache::hex_key(token), &member.workspace_id)
                .await?;
        }
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

/// Authenticates tokens against the members service, remembering each
/// answer for the cache's TTL (`gateway.auth_cache_ttl_ms`, 5 s by default).
#[derive(Debug)]
pub(crate) struct AuthCache {
    tokens: TokenCache,
}

impl AuthCache {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            tokens: TokenCache::new(ttl, MAX_CACHED_TOKENS),
        }
    }

    /// The member `token` belongs to, from the cache or the members service.
    async fn authenticate(
        &self,
        state: &AppState,
        token: &str,
        request_id: Option<&HeaderValue>,
    ) -> Result<Member, ApiError> {
        let key = TokenCache::key(token);
        if let Some(known) = self.tokens.get(&key) {
            return known.ok_or(ApiError::InvalidToken);
        }
        let member = ask_members(state, token, request_id).await?;
        self.tokens.insert(key, member.clone());
        member.ok_or(ApiError::InvalidToken)
    }
}

/// What the members service says about `token`: its member, or `None` when
/// it is unknown or revoked. Failures that are no answer about the token
/// (unavailable, timed out) are errors, and are not remembered.
async fn ask_members(
    state: &AppState,
    token: &str,
    request_id: Option<&HeaderValue>,
) -> Result<Option<Member>, ApiError> {
    let request = request_with_id(
        AuthenticateRequest {
            token: token.to_owned(),
        },
        request_id,
    );
    let mut client = MembersClient::new(state.upstreams.members.clone());
    let member = match state.call(client.authenticate(request)).await {
        Ok(member) => Some(member),
        Err(ApiError::Upstream(status)) if is_refusal(status.code()) => None,
        Err(other) => return Err(other),
    };
    if member
        .as_ref()
        .is_some_and(|m| m.workspace_id.is_empty() || m.user_id.is_empty())
    {
        return Err(ApiError::Incomplete("the member's workspace or user id"));
    }
    Ok(member)
}

/// Token → member for `ttl`, at most `capacity` tokens (least recently used
/// out first). Keyed by the token's SHA-256 so no token sits in memory in
/// the clear longer than its request. Unknown tokens are remembered too (a
/// random token never becomes valid), so retrying with a bad token does not
/// hammer the members service. A revoked or deactivated token keeps working
/// for at most `ttl`; a zero `ttl` remembers nothing.
#[derive(Debug)]
struct TokenCache(TtlCache<[u8; 32], Option<Member>>);

impl TokenCache {
    fn new(ttl: Duration, capacity: usize) -> Self {
        Self(TtlCache::new(ttl, capacity))
    }

    fn key(token: &str) -> [u8; 32] {
        Sha256::digest(token.as_bytes()).into()
    }

    /// [`key`](Self::key) in hex.
    fn hex_key(token: &str) -> String {
        use std::fmt::Write as _;
        Self::key(token)
            .iter()
            .fold(String::with_capacity(64), |mut hex, byte| {
                let _ = write!(hex, "{byte:02x}");
                hex
            })
    }

    /// The remembered answer for `key` (`Some(None)`: a refused token), or
    /// `None` when there is none younger than the TTL.
    fn get(&self, key: &[u8; 32]) -> Option<Option<Member>> {
        self.0.get(key)
    }

    fn insert(&self, key: [u8; 32], member: Option<Member>) {
        self.0.insert(key, member);
    }
}

/// Codes by which the members service says "this token is not valid".
fn is_refusal(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unauthenticated | tonic::Code::InvalidArgument | tonic::Code::NotFound
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(user_id: &str) -> Member {
        Member {
            user_id: user_id.to_owned(),
            workspace_id: "w".to_owned(),
            ..Member::default()
        }
    }

    #[test]
    fn answers_are_remembered_by_the_tokens_hash() {
        let cache = TokenCache::new(Duration::from_secs(60), 10);
        let (known, refused) = (TokenCache::key("tok_a"), TokenCache::key("tok_b"));
        assert_eq!(cache.get(&known), None);
        cache.insert(known, Some(member("u1")));
        cache.insert(refused, None);
        assert_eq!(
            cache.get(&TokenCache::key("tok_a")),
            Some(Some(member("u1")))
        );
        assert_eq!(cache.get(&refused), Some(None));
        assert_ne!(known, refused);
    }
}
