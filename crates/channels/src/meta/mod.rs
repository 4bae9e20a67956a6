//! What Meta's messaging products share (WhatsApp Cloud API, Messenger,
//! Instagram): the webhook subscription handshake, the
//! `X-Hub-Signature-256` signature, and the Graph API's calls and errors.
//!
//! - Handshake: `GET {webhook}?hub.mode=subscribe&hub.verify_token=…&hub.challenge=…`
//!   is answered 200 with the challenge as plain text when the token is
//!   the channel's, 403 otherwise
//!   (developers.facebook.com/docs/graph-api/webhooks/getting-started).
//! - Events: `POST` with `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app
//!   secret, raw body)>`, checked over the bytes received (Meta signs its
//!   escaped-unicode serialisation, so re-serialising would break it), in
//!   constant time.
//! - Graph calls: JSON with a bearer token; errors are
//!   `{"error": {"message", "type", "code", "error_subcode", "fbtrace_id"}}`
//!   and are sorted by their code ([`graph_outcome`]).

use std::time::Duration;

use http::{Method, StatusCode};
use serde::Deserialize;
use telenet_signing::{hmac_sha256, same_secret};

use crate::http::{Answer, exchange, sanitize};
use crate::{HandshakeAnswer, SendOutcome, Webhook, WebhookError};

/// Meta's Graph API host.
pub const GRAPH_HOST: &str = "https://graph.facebook.com";

/// The Graph API version used when a channel does not name one.
pub const DEFAULT_GRAPH_VERSION: &str = "v21.0";

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// How long to pause after a throttling answer that names no time.
pub const DEFAULT_PAUSE: Duration = Duration::from_secs(60);

/// Check `X-Hub-Signature-256` of `webhook` under `app_secret`.
pub fn verify_signature(app_secret: &str, webhook: &Webhook<'_>) -> Result<(), WebhookError> {
    if app_secret.is_empty() {
        return Err(WebhookError::Credentials(
            "the app secret is not set".into(),
        ));
    }
    let header = webhook
        .header(SIGNATURE_HEADER)
        .ok_or(WebhookError::MissingHeader("X-Hub-Signature-256"))?;
    let hex_sig = header.trim().strip_prefix("sha256=").ok_or_else(|| {
        WebhookError::BadSignature("X-Hub-Signature-256 is not sha256=<hex>".into())
    })?;
    let given = hex::decode(hex_sig.to_ascii_lowercase()).map_err(|_| {
        WebhookError::BadSignature("X-Hub-Signature-256 is not sha256=<hex>".into())
    })?;
    if same_secret(&given, &hmac_sha256(app_secret.as_bytes(), webhook.body)) {
        Ok(())
    } else {
        Err(WebhookError::BadSignature(
            "X-Hub-Signature-256 does not match the body under the app secret".into(),
        ))
    }
}

/// The `X-Hub-Signature-256` value Meta sends with `body`.
pub fn signature_header(app_secret: &str, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(hmac_sha256(app_secret.as_bytes(), body))
    )
}

/// The answer to Meta's subscription handshake, when `webhook` is one (a
/// `GET` with `hub.mode`): the challenge when `hub.mode=subscribe` and the
/// token is `verify_token`, 403 otherwise. `None` for anything else.
pub fn handshake(verify_token: &str, webhook: &Webhook<'_>) -> Option<HandshakeAnswer> {
    if webhook.method != Method::GET {
        return None;
    }
    let mut mode = None;
    let mut token = None;
    let mut challenge = None;
    for (name, value) in url::form_urlencoded::parse(webhook.query.as_bytes()) {
        match name.as_ref() {
            "hub.mode" => mode = Some(value.into_owned()),
            "hub.verify_token" => token = Some(value.into_owned()),
            "hub.challenge" => challenge = Some(value.into_owned()),
            _ => {}
        }
    }
    let mode = mode?;
    let matches = !verify_token.is_empty()
        && token
            .as_deref()
            .is_some_and(|t| same_secret(t.as_bytes(), verify_token.as_bytes()));
    let answer = |status: StatusCode, body: &str| HandshakeAnswer {
        status,
        content_type: "text/plain; charset=utf-8",
        body: body.as_bytes().to_vec(),
    };
    Some(match (mode.as_str(), matches, challenge) {
        ("subscribe", true, Some(challenge)) => answer(StatusCode::OK, &challenge),
        ("subscribe", true, None) => answer(StatusCode::BAD_REQUEST, "hub.challenge is missing"),
        ("subscribe", false, _) => answer(StatusCode::FORBIDDEN, "verify token mismatch"),
        _ => answer(StatusCode::BAD_REQUEST, "hub.mode must be subscribe"),
    })
}

/// A Graph API error body.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct GraphError {
    #[serde(default)]
    pub message: String,
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub code: i64,
    #[serde(default)]
    pub error_subcode: i64,
    #[serde(default)]
    pub error_data: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: GraphError,
}

/// The Graph error of an answer's body, if it is one.
pub fn graph_error(body: &[u8]) -> Option<GraphError> {
    serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .map(|b| b.error)
}

/// Graph codes that mean "too many calls" (application, user, page,
/// WhatsApp throughput and pair rate limits).
const THROTTLING: [i64; 8] = [4, 17, 32, 613, 80006, 80007, 130429, 131056];
/// Graph codes that mean passing trouble on Meta's side.
const TRANSIENT: [i64; 4] = [1, 2, 131000, 133004];

/// What an answer to a Graph send means: `Ok` the parsed body of a 2xx;
/// throttling codes (and HTTP 429) [`SendOutcome::Throttled`] (WhatsApp's
/// pair limit, 131056, for 6 s; others for the `Retry-After` or a
/// minute); Meta's transient codes and 5xx a retry; every other error a
/// rejection naming its code and Meta's message (documented text, shown to
/// agents sanitised), e.g. 131047 (more than 24 hours since the contact
/// wrote) or 190 (access token invalid).
pub fn graph_outcome(answer: &Answer) -> Result<serde_json::Value, SendOutcome> {
    if answer.status.is_success() {
        return serde_json::from_slice(&answer.body).map_err(|_| {
            SendOutcome::Retry("the Graph API answered 2xx without a JSON body".into())
        });
    }
    let Some(error) = graph_error(&answer.body) else {
        return Err(answer
            .refusal(DEFAULT_PAUSE)
            .unwrap_or_else(|| SendOutcome::Retry("unexpected answer".into())));
    };
    let reason = sanitize(&format!(
        "Graph API error {}{}: {}",
        error.code,
        if error.error_subcode != 0 {
            format!("/{}", error.error_subcode)
        } else {
            String::new()
        },
        error.message
    ));
    if THROTTLING.contains(&error.code) || answer.status == StatusCode::TOO_MANY_REQUESTS {
        let pause = if error.code == 131056 {
            Duration::from_secs(6)
        } else {
            answer.retry_after.unwrap_or(DEFAULT_PAUSE)
        };
        return Err(SendOutcome::Throttled {
            reason,
            retry_after: pause,
        });
    }
    if TRANSIENT.contains(&error.code) || answer.status.is_server_error() {
        return Err(SendOutcome::Retry(reason));
    }
    Err(SendOutcome::Reject(reason))
}

/// POST `body` as JSON to `url` with the bearer `token`, and read the
/// answer as [`graph_outcome`] does.
pub async fn graph_post(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    body: &serde_json::Value,
) -> Result<serde_json::Value, SendOutcome> {
    let answer = exchange(http.post(url).bearer_auth(token).json(body)).await?;
    graph_outcome(&answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    fn webhook<'a>(
        method: &'a Method,
        query: &'a str,
        headers: &'a HeaderMap,
        body: &'a [u8],
    ) -> Webhook<'a> {
        Webhook {
            channel_id: "ch",
            method,
            url: "https://inbox.test/webhooks/ch",
            query,
            headers,
            body,
            now: 0,
        }
    }

    #[test]
    fn the_signature_is_checked_over_the_raw_body() {
        let body = br#"{"object":"page","entry":[{"x":"\u00e9"}]}"#;
        let mut headers = HeaderMap::new();
        headers.insert(
            SIGNATURE_HEADER,
            signature_header("s3cret", body).parse().expect("header"),
        );
        let post = Method::POST;
        assert_eq!(
            verify_signature("s3cret", &webhook(&post, "", &headers, body)),
            Ok(())
        );
        let other = r#"{"object":"page","entry":[{"x":"é"}]}"#.as_bytes();
        assert!(matches!(
            verify_signature("s3cret", &webhook(&post, "", &headers, other)),
            Err(WebhookError::BadSignature(_))
        ));
        assert!(matches!(
            verify_signature("other", &webhook(&post, "", &headers, body)),
            Err(WebhookError::BadSignature(_))
        ));
        assert_eq!(
            verify_signature("s3cret", &webhook(&post, "", &HeaderMap::new(), body)),
            Err(WebhookError::MissingHeader("X-Hub-Signature-256"))
        );
        assert!(matches!(
            verify_signature("", &webhook(&post, "", &headers, body)),
            Err(WebhookError::Credentials(_))
        ));
    }

    #[test]
    fn the_handshake_echoes_the_challenge_only_for_the_channels_token() {
        let get = Method::GET;
        let h = HeaderMap::new();
        let ok = handshake(
            "tok",
            &webhook(
                &get,
                "hub.mode=subscribe&hub.verify_token=tok&hub.challenge=1158201444",
                &h,
                b"",
            ),
        )
        .expect("a handshake");
        assert_eq!(
            (ok.status, ok.body.as_slice()),
            (StatusCode::OK, &b"1158201444"[..])
        );
        let wrong = handshake(
            "tok",
            &webhook(
                &get,
                "hub.mode=subscribe&hub.verify_token=nope&hub.challenge=1",
                &h,
                b"",
            ),
        )
        .expect("a handshake");
        assert_eq!(wrong.status, StatusCode::FORBIDDEN);
        let empty_token = handshake(
            "",
            &webhook(
                &get,
                "hub.mode=subscribe&hub.verify_token=&hub.challenge=1",
                &h,
                b"",
            ),
        )
        .expect("a handshake");
        assert_eq!(empty_token.status, StatusCode::FORBIDDEN);
        assert!(handshake("tok", &webhook(&get, "", &h, b"")).is_none());
        let post = Method::POST;
        assert!(handshake("tok", &webhook(&post, "hub.mode=subscribe", &h, b"")).is_none());
    }

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).expect("status"),
            body: body.as_bytes().to_vec(),
            retry_after: None,
        }
    }

    #[test]
    fn graph_errors_are_sorted_by_their_code() {
        let window = answer(
            400,
            r#"{"error":{"message":"Re-engagement message","type":"OAuthException","code":131047,"fbtrace_id":"x"}}"#,
        );
        let Err(SendOutcome::Reject(reason)) = graph_outcome(&window) else {
            panic!("outside the window is permanent");
        };
        assert!(
            reason.contains("131047") && reason.contains("Re-engagement"),
            "{reason}"
        );
        let pair = answer(400, r#"{"error":{"message":"pair rate","code":131056}}"#);
        assert!(matches!(
            graph_outcome(&pair),
            Err(SendOutcome::Throttled { retry_after, .. }) if retry_after == Duration::from_secs(6)
        ));
        let busy = answer(429, "not json");
        assert!(matches!(
            graph_outcome(&busy),
            Err(SendOutcome::Throttled { .. })
        ));
        let down = answer(500, r#"{"error":{"message":"unknown","code":1}}"#);
        assert!(matches!(graph_outcome(&down), Err(SendOutcome::Retry(_))));
        let ok = answer(200, r#"{"messages":[{"id":"wamid.X"}]}"#);
        assert_eq!(
            graph_outcome(&ok).expect("sent")["messages"][0]["id"],
            "wamid.X"
        );
    }
}
