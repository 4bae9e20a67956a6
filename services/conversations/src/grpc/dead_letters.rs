//! The `DeadLetters` operations service: the bus's dead letters of one
//! workspace (the gateway asks for its manager's) or of all (an operator),
//! through the store crate's `dead_letters`, the same code as
//! `telenet dead-letters`. Reserved to TELENET's services
//! (`telenet_proto::access::INTERNAL_ONLY`).

use telenet_bus::{BusError, SharedBus};
use telenet_proto::operations::v1::dead_letters_server::DeadLetters;
use telenet_proto::operations::v1::{
    ActOnDeadLettersRequest, ActOnDeadLettersResponse, ListDeadLettersRequest,
    ListDeadLettersResponse,
};
use telenet_store::dead_letters::{self, Action, DeadLetterError, Selection};
use tonic::{Request, Response, Status};

/// The service over the process's bus (which declared every group).
pub struct DeadLettersApi {
    bus: SharedBus,
}

impl DeadLettersApi {
    pub fn new(bus: SharedBus) -> Self {
        Self { bus }
    }

    async fn act(
        &self,
        request: ActOnDeadLettersRequest,
        action: Action,
    ) -> Result<Response<ActOnDeadLettersResponse>, Status> {
        let selection = selection_to_act_on(request)?;
        let done = dead_letters::act(&self.bus, &selection, action, dead_letters::MAX_LIMIT)
            .await
            .map_err(status)?;
        Ok(Response::new(ActOnDeadLettersResponse {
            dead_letters: done,
        }))
    }
}

fn workspace(id: String) -> Option<String> {
    let id = id.trim();
    (!id.is_empty()).then(|| id.to_owned())
}

/// Acting on every dead letter must be asked for (`all`), never implied by
/// an empty list of ids.
fn selection_to_act_on(request: ActOnDeadLettersRequest) -> Result<Selection, Status> {
    let event_ids: Vec<String> = request
        .event_ids
        .iter()
        .map(|id| id.trim().to_owned())
        .filter(|id| !id.is_empty())
        .collect();
    match (event_ids.is_empty(), request.all) {
        (true, false) => Err(Status::invalid_argument(
            "event_ids: name the dead letters to act on, or set all",
        )),
        (false, true) => Err(Status::invalid_argument(
            "all: give either event_ids or all, not both",
        )),
        _ => Ok(Selection {
            workspace_id: workspace(request.workspace_id),
            groups: request.groups,
            event_ids,
        }),
    }
}

fn status(error: DeadLetterError) -> Status {
    match error {
        DeadLetterError::Invalid(message) => Status::invalid_argument(message),
        error @ DeadLetterError::NotFound(_) => Status::not_found(error.to_string()),
        DeadLetterError::Bus(BusError::Config(message)) => Status::invalid_argument(message),
        DeadLetterError::Bus(error) => {
            tracing::warn!(%error, "dead letters: the event bus failed");
            Status::unavailable("the event bus is unavailable; retry later")
        }
    }
}

#[tonic::async_trait]
impl DeadLetters for DeadLettersApi {
    async fn list_dead_letters(
        &self,
        request: Request<ListDeadLettersRequest>,
    ) -> Result<Response<ListDeadLettersResponse>, Status> {
        let request = request.into_inner();
        let selection = Selection {
            workspace_id: workspace(request.workspace_id),
            groups: request.groups,
            event_ids: Vec::new(),
        };
        let listed = dead_letters::list(&self.bus, &selection, dead_letters::limit(request.limit))
            .await
            .map_err(status)?;
        Ok(Response::new(ListDeadLettersResponse {
            dead_letters: listed,
        }))
    }

    async fn redrive_dead_letters(
        &self,
        request: Request<ActOnDeadLettersRequest>,
    ) -> Result<Response<ActOnDeadLettersResponse>, Status> {
        self.act(request.into_inner(), Action::Redrive).await
    }

    async fn discard_dead_letters(
        &self,
        request: Request<ActOnDeadLettersRequest>,
    ) -> Result<Response<ActOnDeadLettersResponse>, Status> {
        self.act(request.into_inner(), Action::Discard).await
    }
}
