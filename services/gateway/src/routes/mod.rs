//! The REST handlers, one module per area, and the validation they share.

pub(crate) mod channel_settings;
pub(crate) mod channels;
pub(crate) mod contacts;
pub(crate) mod conversations;
pub(crate) mod dead_letters;
pub(crate) mod files;
pub(crate) mod me;
pub(crate) mod meta;
pub(crate) mod reports;
pub(crate) mod tokens;

use serde::Deserialize;
use telenet_proto::common::v1::{PageInfo, PageRequest};
use utoipa::IntoParams;

use crate::error::ApiError;

/// Largest page a client may ask for (the upstream services' limit).
pub(crate) const MAX_PAGE_SIZE: u32 = 200;

/// Page tokens are opaque cursors of a few dozen bytes; anything much longer
/// is not one of ours and is refused before it reaches a service. (The
/// `max_length` of the `page_token` parameters in the document.)
const MAX_PAGE_TOKEN_LEN: usize = 1024;

/// Paging of list endpoints.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1–200 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    pub page_size: Option<String>,
    /// The `next_page_token` of the previous page.
    #[param(max_length = 1024)]
    pub page_token: Option<String>,
}

impl PageQuery {
    pub(crate) fn to_proto(&self) -> Result<PageRequest, ApiError> {
        page_request(self.page_size.as_deref(), self.page_token.as_deref())
    }
}

/// An empty query value (`?page_size=`) counts as absent.
pub(crate) fn present(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

/// The upstream page request for the `page_size` and `page_token` query
/// values.
pub(crate) fn page_request(
    size: Option<&str>,
    token: Option<&str>,
) -> Result<PageRequest, ApiError> {
    let page_size = match present(size) {
        None => 0,
        Some(raw) => match raw.parse::<u32>() {
            Ok(n) if (1..=MAX_PAGE_SIZE).contains(&n) => n,
            _ => {
                return Err(ApiError::invalid(
                    "page_size",
                    format!("page_size must be an integer between 1 and {MAX_PAGE_SIZE}"),
                ));
            }
        },
    };
    let page_token = present(token).unwrap_or_default();
    if page_token.len() > MAX_PAGE_TOKEN_LEN || !page_token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::invalid(
            "page_token",
            "page_token is not a valid page token",
        ));
    }
    Ok(PageRequest {
        page_size,
        page_token: page_token.to_owned(),
    })
}

/// `next_page_token` as JSON: `null` on the last page.
pub(crate) fn next_token(page: Option<PageInfo>) -> Option<String> {
    page.map(|p| p.next_page_token).filter(|t| !t.is_empty())
}

/// A UUID id from a path, query or body `field`, in canonical lowercase form
/// (ids are stored that way upstream).
pub(crate) fn parse_id(field: &'static str, raw: &str) -> Result<String, ApiError> {
    uuid::Uuid::try_parse(raw.trim())
        .map(|id| id.to_string())
        .map_err(|_| ApiError::invalid(field, format!("{field} must be a uuid")))
}
