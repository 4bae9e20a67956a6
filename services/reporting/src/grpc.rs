//! The `telenet.reporting.v1.Reports` API over [`ReportingService`]:
//! requests become domain queries, rows become messages, errors become
//! statuses. The rules live in the domain.

use telenet_kit::error::to_status;
use telenet_proto::reporting::v1 as pb;
use telenet_proto::reporting::v1::reports_server::Reports;
use tonic::{Request, Response, Status};

use crate::ReportingService;
use crate::domain::{DayVolume, VolumeQuery};

#[tonic::async_trait]
impl Reports for ReportingService {
    async fn get_daily_volume(
        &self,
        request: Request<pb::GetDailyVolumeRequest>,
    ) -> Result<Response<pb::GetDailyVolumeResponse>, Status> {
        let req = request.get_ref();
        let query = VolumeQuery::new(&req.workspace_id, req.range.as_ref(), &req.channel_id)
            .map_err(|e| to_status(&e))?;
        let rows = self.daily_volume(&query).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::GetDailyVolumeResponse {
            rows: rows.into_iter().map(volume_message).collect(),
        }))
    }
}

fn volume_message(volume: DayVolume) -> pb::DailyVolume {
    let counts = volume.counts;
    pb::DailyVolume {
        day: volume.day,
        channel_id: volume.channel_id,
        conversations_opened: count(counts.opened),
        conversations_closed: count(counts.closed),
        messages_in: count(counts.messages_in),
        messages_out: count(counts.messages_out),
    }
}

/// Stored counts only ever grow from zero; one below (a damaged row) reads
/// as zero rather than failing the whole report.
fn count(stored: i64) -> u64 {
    u64::try_from(stored).unwrap_or(0)
}
