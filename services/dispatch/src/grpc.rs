//! The `telenet.dispatch.v1.Dispatch` API over [`DispatchService`]: what
//! became of each outbound message. Errors become statuses here only.

use telenet_kit::error::to_status;
use telenet_proto::dispatch::v1 as pb;
use telenet_proto::dispatch::v1::dispatch_server::Dispatch;
use tonic::{Request, Response, Status};

use crate::{DispatchService, Error};

#[tonic::async_trait]
impl Dispatch for DispatchService {
    async fn get_delivery(
        &self,
        request: Request<pb::GetDeliveryRequest>,
    ) -> Result<Response<pb::Delivery>, Status> {
        let r = request.get_ref();
        DispatchService::get_delivery(self, &r.workspace_id, &r.message_id)
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn list_dead_letters(
        &self,
        request: Request<pb::ListDeadLettersRequest>,
    ) -> Result<Response<pb::ListDeadLettersResponse>, Status> {
        let r = request.get_ref();
        let deliveries = DispatchService::list_dead_letters(self, &r.workspace_id, r.limit)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListDeadLettersResponse { deliveries }))
    }
}

fn status(error: Error) -> Status {
    to_status(&error)
}
