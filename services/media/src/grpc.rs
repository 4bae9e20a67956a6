//! The `telenet.media.v1.Media` gRPC API over [`MediaService`]: message
//! framing (header first, then chunks) and errors turned into statuses
//! ([`Error::to_status`], through kit's code table); the rules live in the
//! service.

use futures::{StreamExt, stream};
use telenet_proto::media::v1 as pb;
use telenet_proto::media::v1::media_server::Media;
use telenet_proto::media::v1::upload_request::Part;
use tonic::{Request, Response, Status, Streaming};

use crate::{Download, Error, MediaService};

#[tonic::async_trait]
impl Media for MediaService {
    async fn upload(
        &self,
        request: Request<Streaming<pb::UploadRequest>>,
    ) -> Result<Response<pb::Blob>, Status> {
        let mut messages = request.into_inner();
        let header = match messages.message().await {
            Ok(Some(pb::UploadRequest {
                part: Some(Part::Header(header)),
            })) => header,
            Ok(_) => {
                return Err(Error::InvalidArgument(
                    "the first upload message must carry the header".into(),
                )
                .to_status());
            }
            Err(status) => return Err(Error::Stream(status).to_status()),
        };
        let chunks = messages.map(|message| match message {
            Ok(pb::UploadRequest {
                part: Some(Part::Chunk(chunk)),
            }) => Ok(chunk),
            Ok(pb::UploadRequest {
                part: Some(Part::Header(_)),
            }) => Err(Error::InvalidArgument(
                "header must be sent once, in the first message".into(),
            )),
            Ok(pb::UploadRequest { part: None }) => Err(Error::InvalidArgument(
                "upload message carries neither header nor chunk".into(),
            )),
            Err(status) => Err(Error::Stream(status)),
        });
        MediaService::upload(self, &header, chunks)
            .await
            .map(Response::new)
            .map_err(|e| e.to_status())
    }

    async fn download(
        &self,
        request: Request<pb::DownloadRequest>,
    ) -> Result<Response<tonic::codegen::BoxStream<pb::DownloadResponse>>, Status> {
        let Download { blob, chunks } = MediaService::download(self, request.get_ref())
            .await
            .map_err(|e| e.to_status())?;
        let first = pb::DownloadResponse {
            blob: Some(blob),
            chunk: Vec::new(),
        };
        let rest = chunks.map(|chunk| {
            chunk
                .map(|chunk| pb::DownloadResponse { blob: None, chunk })
                .map_err(|e| e.to_status())
        });
        Ok(Response::new(Box::pin(
            stream::once(async { Ok(first) }).chain(rest),
        )))
    }

    async fn get_blob_metadata(
        &self,
        request: Request<pb::GetBlobMetadataRequest>,
    ) -> Result<Response<pb::BlobMetadata>, Status> {
        MediaService::blob_metadata(self, request.get_ref())
            .await
            .map(Response::new)
            .map_err(|e| e.to_status())
    }

    async fn create_download_url(
        &self,
        request: Request<pb::CreateDownloadUrlRequest>,
    ) -> Result<Response<pb::CreateDownloadUrlResponse>, Status> {
        MediaService::create_download_url(self, request.get_ref())
            .await
            .map(Response::new)
            .map_err(|e| e.to_status())
    }

    async fn probe(
        &self,
        request: Request<pb::ProbeRequest>,
    ) -> Result<Response<pb::ProbeResult>, Status> {
        MediaService::probe_blob(self, request.get_ref())
            .await
            .map(Response::new)
            .map_err(|e| e.to_status())
    }

    async fn list_profiles(
        &self,
        request: Request<pb::ListProfilesRequest>,
    ) -> Result<Response<pb::ListProfilesResponse>, Status> {
        let kind = telenet_proto::common::v1::ChannelKind::try_from(request.get_ref().channel_kind)
            .map_err(|_| {
                Error::InvalidArgument("channel_kind is not a known channel kind".into())
                    .to_status()
            })?;
        Ok(Response::new(crate::domain::list_profiles(kind)))
    }

    // Variants (crate::variants).

    async fn transcode(
        &self,
        request: Request<pb::TranscodeRequest>,
    ) -> Result<Response<pb::Variant>, Status> {
        MediaService::transcode(self, request.get_ref())
            .await
            .map(Response::new)
            .map_err(|e| e.to_status())
    }

    async fn get_variant(
        &self,
        request: Request<pb::GetVariantRequest>,
    ) -> Result<Response<pb::Variant>, Status> {
        MediaService::get_variant(self, request.get_ref())
            .await
            .map(Response::new)
            .map_err(|e| e.to_status())
    }

    async fn list_variants(
        &self,
        request: Request<pb::ListVariantsRequest>,
    ) -> Result<Response<pb::ListVariantsResponse>, Status> {
        let req = request.get_ref();
        MediaService::list_variants(self, &req.workspace_id, &req.blob_id)
            .await
            .map(|variants| Response::new(pb::ListVariantsResponse { variants }))
            .map_err(|e| e.to_status())
    }
}
