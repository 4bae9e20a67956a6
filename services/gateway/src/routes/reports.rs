//! Reports computed by the reporting service.

use axum::Json;
use axum::extract::State;
use chrono::{NaiveDate, NaiveTime};
use serde::Deserialize;
use telenet_proto::common::v1::TimeRange;
use telenet_proto::reporting::v1::GetDailyVolumeRequest;
use telenet_proto::reporting::v1::reports_client::ReportsClient;
use utoipa::IntoParams;

use super::{parse_id, present};
use crate::AppState;
use crate::auth::Caller;
use crate::dto::{DailyVolumeReport, timestamp};
use crate::error::ApiError;
use crate::extract::ApiQuery;

/// The longest span a report may cover, in days (a leap year).
pub(crate) const MAX_REPORT_DAYS: i64 = 366;

/// Query of `GET /v1/reports/daily-volume`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DailyVolumeQuery {
    /// First day to include (UTC), `YYYY-MM-DD`.
    #[param(value_type = String, format = Date, example = "2025-01-01")]
    pub from: Option<String>,
    /// Last day to include (UTC), `YYYY-MM-DD`; a report spans at most 366 days.
    #[param(value_type = String, format = Date, example = "2025-01-31")]
    pub to: Option<String>,
    /// Only this channel.
    #[param(format = Uuid)]
    pub channel_id: Option<String>,
}

/// A validated daily-volume query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DailyVolumeSpan {
    pub(crate) from: NaiveDate,
    pub(crate) to: NaiveDate,
    pub(crate) channel_id: Option<String>,
}

fn day(field: &'static str, raw: Option<&str>) -> Result<NaiveDate, ApiError> {
    let raw = present(raw)
        .ok_or_else(|| ApiError::invalid(field, format!("{field} is required (YYYY-MM-DD)")))?;
    NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .map_err(|_| ApiError::invalid(field, format!("{field} must be a date as YYYY-MM-DD")))
}

impl DailyVolumeQuery {
    pub(crate) fn validate(&self) -> Result<DailyVolumeSpan, ApiError> {
        let from = day("from", self.from.as_deref())?;
        let to = day("to", self.to.as_deref())?;
        if to < from {
            return Err(ApiError::invalid("to", "to must not be before from"));
        }
        if (to - from).num_days() >= MAX_REPORT_DAYS {
            return Err(ApiError::invalid(
                "to",
                format!(
                    "to must be at most {} days after from (a report covers at most {MAX_REPORT_DAYS} days)",
                    MAX_REPORT_DAYS - 1
                ),
            ));
        }
        let channel_id = present(self.channel_id.as_deref())
            .map(|id| parse_id("channel_id", id))
            .transpose()?;
        Ok(DailyVolumeSpan {
            from,
            to,
            channel_id,
        })
    }
}

/// Conversations opened/closed and messages in/out per day and channel.
#[utoipa::path(
    get,
    path = "/v1/reports/daily-volume",
    tag = "reports",
    params(DailyVolumeQuery),
    responses(
        (status = 200, description = "the report", body = DailyVolumeReport),
        (status = 400, description = "invalid dates or channel"),
    ),
)]
pub(crate) async fn daily_volume(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<DailyVolumeQuery>,
) -> Result<Json<DailyVolumeReport>, ApiError> {
    let span = query.validate()?;
    // `to` is inclusive for people, the upstream range's end is exclusive.
    let end = span
        .to
        .succ_opt()
        .ok_or_else(|| ApiError::invalid("to", "to is out of range"))?;
    let request = GetDailyVolumeRequest {
        workspace_id: caller.workspace_id().to_owned(),
        range: Some(TimeRange {
            start: Some(timestamp(span.from.and_time(NaiveTime::MIN).and_utc())),
            end: Some(timestamp(end.and_time(NaiveTime::MIN).and_utc())),
        }),
        channel_id: span.channel_id.clone().unwrap_or_default(),
    };
    let mut client = ReportsClient::new(state.upstreams.reporting.clone());
    let response = state
        .call(client.get_daily_volume(caller.request(request)))
        .await?;
    Ok(Json(DailyVolumeReport {
        from: span.from,
        to: span.to,
        channel_id: span.channel_id,
        rows: response.rows.into_iter().map(Into::into).collect(),
    }))
}
