//! Bearer-token authentication against the members service, with a short
//! cache so a burst of requests from one agent costs one upstream call.
//! A revoked token is dropped from the cache at once by its
//! `member.token_revoked` event (every replica subscribes); the TTL only
//! bounds how long a lost event could leave it working, and no entry
//! outlives its token's expiry.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use sha2::{Digest, Sha256};
use telenet_bus::Subscription;
use telenet_kit::cache::TtlCache;
use telenet_proto::conversations::v1::members_client::MembersClient;
use telenet_proto::conversations::v1::{AccessLevel, AuthenticateRequest, Member};
use telenet_proto::events::v1::EventEnvelope;
use telenet_proto::events::v1::event_envelope::Payload;
use tokio_util::sync::CancellationToken;

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
/// answer for the cache's TTL (`gateway.auth_cache_ttl_ms`, 5 s by default)
/// or until the token expires, whichever is sooner, and forgetting a token
/// as soon as its revocation is heard.
#[derive(Debug)]
pub(crate) struct AuthCache {
    tokens: TokenCache,
    /// Revocations heard so far: an answer fetched while one arrived may
    /// predate it, so it is used once and not remembered.
    revocations: AtomicU64,
}

impl AuthCache {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            tokens: TokenCache::new(ttl, MAX_CACHED_TOKENS),
            revocations: AtomicU64::new(0),
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
            return known.into_result();
        }
        let heard = self.revocations.load(Ordering::SeqCst);
        let answer = ask_members(state, token, request_id).await?;
        if self.revocations.load(Ordering::SeqCst) == heard {
            self.tokens.insert(key, answer.clone());
        }
        answer.into_result()
    }

    /// Forget the token whose SHA-256 is `key`: it was revoked, so it is
    /// refused from now on without asking.
    pub(crate) fn revoked(&self, key: [u8; 32]) {
        self.revocations.fetch_add(1, Ordering::SeqCst);
        self.tokens.insert(key, Answer::Refused);
    }
}

/// Drops every token revoked anywhere from `cache`, as its
/// `member.token_revoked` events arrive on this replica's own broadcast
/// subscription, until `stop`. Each delivery is acknowledged once applied
/// (an undecodable one is dropped: it names no token to forget).
pub(crate) async fn forget_revoked_tokens(
    mut revocations: Subscription,
    cache: std::sync::Arc<AuthCache>,
    stop: CancellationToken,
) {
    loop {
        let delivery = tokio::select! {
            () = stop.cancelled() => return,
            next = revocations.next() => match next {
                Some(delivery) => delivery,
                None => {
                    tracing::warn!("token revocations subscription ended; revoked tokens now wait for the cache TTL");
                    return;
                }
            },
        };
        match revoked_token_key(&delivery.event.payload) {
            Some(key) => cache.revoked(key),
            None => {
                tracing::warn!(event_id = %delivery.event.id, "undecodable token revocation ignored")
            }
        }
        if let Err(error) = delivery.ack().await {
            tracing::debug!(%error, "acknowledging a token revocation");
        }
    }
}

/// The cache key (the token's SHA-256) a `member.token_revoked` event names.
fn revoked_token_key(payload: &[u8]) -> Option<[u8; 32]> {
    use prost::Message as _;
    let envelope = EventEnvelope::decode(payload).ok()?;
    let Some(Payload::TokenRevoked(revoked)) = envelope.payload else {
        return None;
    };
    hex::decode(&revoked.token_hash).ok()?.try_into().ok()
}

/// What the members service said about `token`.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    /// Its member.
    Member(Member),
    /// Unknown or revoked.
    Refused,
    /// Expired.
    Expired,
}

impl Answer {
    fn into_result(self) -> Result<Member, ApiError> {
        match self {
            Answer::Member(member) => Ok(member),
            Answer::Refused => Err(ApiError::InvalidToken),
            Answer::Expired => Err(ApiError::ExpiredToken),
        }
    }
}

/// What the members service says about `token`: its member, or a refusal
/// when it is unknown, revoked or expired. Failures that are no answer
/// about the token (unavailable, timed out) are errors, and are not
/// remembered.
async fn ask_members(
    state: &AppState,
    token: &str,
    request_id: Option<&HeaderValue>,
) -> Result<Answer, ApiError> {
    let request = request_with_id(
        AuthenticateRequest {
            token: token.to_owned(),
        },
        request_id,
    );
    let mut client = MembersClient::new(state.upstreams.members.clone());
    let member = match state.call(client.authenticate(request)).await {
        Ok(member) => member,
        Err(ApiError::Upstream(status)) if is_refusal(status.code()) => {
            return Ok(if status.message() == EXPIRED_MESSAGE {
                Answer::Expired
            } else {
                Answer::Refused
            });
        }
        Err(other) => return Err(other),
    };
    if member.workspace_id.is_empty() || member.user_id.is_empty() {
        return Err(ApiError::Incomplete("the member's workspace or user id"));
    }
    Ok(Answer::Member(member))
}

/// The members service's message for an expired token.
const EXPIRED_MESSAGE: &str = "token expired";

/// Token → answer for `ttl`, at most `capacity` tokens (least recently used
/// out first), a member no later than their token expires. Keyed by the
/// token's SHA-256 so no token sits in memory in the clear longer than its
/// request. Refused tokens are remembered too (a random token never becomes
/// valid), so retrying with a bad token does not hammer the members
/// service. A zero `ttl` remembers nothing.
#[derive(Debug)]
struct TokenCache(TtlCache<[u8; 32], Answer>);

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

    /// The remembered answer for `key`, or `None` when there is none
    /// still valid.
    fn get(&self, key: &[u8; 32]) -> Option<Answer> {
        self.0.get(key)
    }

    fn insert(&self, key: [u8; 32], answer: Answer) {
        let until = match &answer {
            Answer::Member(member) => member.token_expires_at.as_ref().map(instant_of),
            _ => None,
        };
        match until {
            Some(until) => self.0.insert_until(key, answer, until),
            None => self.0.insert(key, answer),
        }
    }
}

/// The monotonic instant of a wall-clock time (now, if it is past).
fn instant_of(at: &prost_types::Timestamp) -> Instant {
    let at = SystemTime::UNIX_EPOCH
        + Duration::from_secs(u64::try_from(at.seconds).unwrap_or(0))
        + Duration::from_nanos(u64::try_from(at.nanos).unwrap_or(0));
    let left = at
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    Instant::now() + left
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
        cache.insert(known, Answer::Member(member("u1")));
        cache.insert(refused, Answer::Refused);
        assert_eq!(
            cache.get(&TokenCache::key("tok_a")),
            Some(Answer::Member(member("u1")))
        );
        assert_eq!(cache.get(&refused), Some(Answer::Refused));
        assert_ne!(known, refused);
    }

    #[test]
    fn a_member_is_not_remembered_past_the_tokens_expiry() {
        let cache = TokenCache::new(Duration::from_secs(3600), 10);
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let expiring = |seconds_from_now: i64| Member {
            token_expires_at: Some(prost_types::Timestamp {
                seconds: i64::try_from(now.as_secs()).unwrap_or(0) + seconds_from_now,
                nanos: 0,
            }),
            ..member("u1")
        };
        let (past, later) = (TokenCache::key("tok_past"), TokenCache::key("tok_later"));
        cache.insert(past, Answer::Member(expiring(-1)));
        cache.insert(later, Answer::Member(expiring(600)));
        assert_eq!(cache.get(&past), None, "an expired token is not served");
        assert!(cache.get(&later).is_some());
    }

    #[test]
    fn a_revocation_refuses_the_cached_token_at_once() {
        let cache = AuthCache::new(Duration::from_secs(3600));
        let key = TokenCache::key("tok_a");
        cache.tokens.insert(key, Answer::Member(member("u1")));
        use prost::Message as _;
        let envelope = EventEnvelope {
            payload: Some(Payload::TokenRevoked(
                telenet_proto::events::v1::TokenRevoked {
                    token_hash: hex::encode(key),
                    ..Default::default()
                },
            )),
            ..Default::default()
        };
        let named = revoked_token_key(&envelope.encode_to_vec());
        assert_eq!(named, Some(key));
        cache.revoked(key);
        assert_eq!(cache.tokens.get(&key), Some(Answer::Refused));
        assert_eq!(revoked_token_key(b"not an envelope"), None);
    }
}
