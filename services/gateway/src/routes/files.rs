//! Files: uploads streamed through to the media service, and downloads
//! (with byte ranges) streamed back. The gateway never holds a whole file:
//! an upload goes out as gRPC chunks while it comes in, a download goes out
//! as the media service sends it.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::multipart::{Field, MultipartError};
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use telenet_proto::media::v1 as media;
use telenet_proto::media::v1::media_client::MediaClient;
use telenet_proto::media::v1::upload_request::Part;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery, OptionalJson};
use crate::problem::Problem;
use telenet_audio::sniff;

const MIB: u64 = 1024 * 1024;

/// Largest upload chunk sent to the media service (it accepts up to 1 MiB).
const UPLOAD_CHUNK: usize = 256 * 1024;

/// Room for the multipart framing around the file: boundaries, part
/// headers and the `kind` field.
const MULTIPART_OVERHEAD: u64 = 64 * 1024;

/// Longest `kind` value read.
const MAX_KIND_LEN: usize = 32;

/// Largest upload per kind, in bytes (`gateway.max_upload_bytes.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UploadLimits {
    /// Voice notes (5 minutes of any accepted format fit easily).
    pub voice: u64,
    /// Pictures.
    pub image: u64,
    /// Any other file. The media service's `max_upload_bytes` must be at
    /// least this.
    pub file: u64,
}

impl Default for UploadLimits {
    fn default() -> Self {
        Self {
            voice: 16 * MIB,
            image: 16 * MIB,
            file: 100 * MIB,
        }
    }
}

impl UploadLimits {
    fn of(&self, kind: UploadKind) -> u64 {
        match kind {
            UploadKind::Voice => self.voice,
            UploadKind::Image => self.image,
            UploadKind::File => self.file,
        }
    }

    /// The request body limit of `POST /v1/files`: the largest file plus
    /// the form around it.
    pub(crate) fn body_limit(&self) -> usize {
        let largest = self.voice.max(self.image).max(self.file);
        usize::try_from(largest.saturating_add(MULTIPART_OVERHEAD)).unwrap_or(usize::MAX)
    }
}

/// What is being uploaded: it sets the size limit and the accepted types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UploadKind {
    /// A recorded voice note: audio only (Ogg, WebM, MP4/M4A, MP3, AAC, WAV,
    /// FLAC, AMR).
    Voice,
    /// A picture (JPEG, PNG, GIF, WebP, HEIC, AVIF).
    Image,
    /// Any file.
    File,
}

impl UploadKind {
    fn as_str(self) -> &'static str {
        match self {
            UploadKind::Voice => "voice",
            UploadKind::Image => "image",
            UploadKind::File => "file",
        }
    }
}

/// The form of `POST /v1/files` (`multipart/form-data`). Only its schema is
/// used: the form itself is read part by part as it streams in, so `kind`
/// comes first and `file` last.
#[allow(dead_code)]
#[derive(Debug, ToSchema)]
pub struct UploadForm {
    /// `voice`, `image` or `file` (the default). Sent before `file`.
    pub kind: Option<UploadKind>,
    /// The file. Its part's `Content-Type` is the declared type, which must
    /// match the bytes when it is a type the gateway knows.
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
}

/// A stored file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FileView {
    /// File id: the hex SHA-256 of the bytes.
    pub id: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// The declared MIME type, normalised.
    pub mime_type: String,
}

impl From<media::Blob> for FileView {
    fn from(b: media::Blob) -> Self {
        Self {
            id: b.id,
            size_bytes: b.size_bytes,
            mime_type: b.mime_type,
        }
    }
}

/// The bytes of a file (its schema; the bytes themselves are streamed).
#[allow(dead_code)]
#[derive(Debug, ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct FileBytes(pub Vec<u8>);

/// The file id in the path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct FilePath {
    /// File id (64 hex characters).
    #[param(pattern = "^[0-9a-fA-F]{64}$")]
    pub id: String,
}

/// Upload a file: a voice note, a picture or any file.
///
/// The body is `multipart/form-data` with an optional `kind` field followed
/// by the `file` part; the file is streamed to storage as it arrives. The id
/// is the SHA-256 of the bytes, so uploading the same file again answers
/// with the same id.
#[utoipa::path(
    post,
    path = "/v1/files",
    tag = "files",
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "the file is stored", body = FileView,
         headers(("location" = String, description = "where the file is downloaded"))),
        (status = 400, description = "the form is malformed, or has no `file` part"),
        (status = 413, description = "the file is larger than its kind allows"),
        (status = 415, description = "the declared type is not one the kind accepts, or does not match the bytes"),
    ),
)]
pub(crate) async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    request: Request,
) -> Result<Response, ApiError> {
    let mut form = Multipart::from_request(request, &state)
        .await
        .map_err(|rejection| ApiError::Rejected {
            status: rejection.status(),
            detail: rejection.body_text(),
        })?;
    let mut kind = UploadKind::File;
    while let Some(mut field) = form.next_field().await.map_err(multipart_error)? {
        match field.name() {
            Some("kind") => kind = read_kind(&mut field).await?,
            Some("file") => {
                let blob = upload_file(&state, &caller, kind, field).await?;
                // The file ends the form. A part after it (a `kind` sent
                // late) would have been ignored: refused instead, so the
                // client learns its kind did not apply. The bytes are
                // stored by then (content-addressed: a retry in the right
                // order finds them).
                if form.next_field().await.map_err(multipart_error)?.is_some() {
                    return Err(ApiError::invalid(
                        "form",
                        "the `file` part must be the form's last part (`kind` comes before it)",
                    ));
                }
                let location = format!("/v1/files/{}", blob.id);
                return Ok((
                    StatusCode::CREATED,
                    [(header::LOCATION, location)],
                    Json(FileView::from(blob)),
                )
                    .into_response());
            }
            Some(other) => {
                return Err(ApiError::invalid(
                    "form",
                    format!("unknown form field {other:?}; the form has `kind` and `file`"),
                ));
            }
            None => return Err(ApiError::invalid("form", "a form part has no name")),
        }
    }
    Err(ApiError::invalid("file", "the form has no `file` part"))
}

async fn read_kind(field: &mut Field<'_>) -> Result<UploadKind, ApiError> {
    let mut raw = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        raw.extend_from_slice(&chunk);
        if raw.len() > MAX_KIND_LEN {
            break;
        }
    }
    match std::str::from_utf8(&raw).map(str::trim) {
        Ok("voice") => Ok(UploadKind::Voice),
        Ok("image") => Ok(UploadKind::Image),
        Ok("file") | Ok("") => Ok(UploadKind::File),
        _ => Err(ApiError::invalid(
            "kind",
            "kind must be one of voice, image, file",
        )),
    }
}

/// Check the declared type, then stream the part to the media service.
async fn upload_file(
    state: &AppState,
    caller: &Caller,
    kind: UploadKind,
    mut field: Field<'_>,
) -> Result<media::Blob, ApiError> {
    let declared = field.content_type().map(str::to_owned).ok_or_else(|| {
        ApiError::invalid(
            "file",
            "the file part needs a Content-Type: the file's declared type",
        )
    })?;
    let essence = telenet_kit::mime::essence(&declared);
    let allowed = sniff::formats_of(&essence);
    let accepts = |f: fn(sniff::Format) -> bool| allowed.is_some_and(|a| a.iter().any(|&x| f(x)));
    let refused = match kind {
        UploadKind::Voice if !accepts(sniff::Format::is_audio) => {
            Some("a voice note must be audio (Ogg, WebM, MP4/M4A, MP3, AAC, WAV, FLAC or AMR)")
        }
        UploadKind::Image if !accepts(sniff::Format::is_image) => {
            Some("an image must be JPEG, PNG, GIF, WebP, HEIC or AVIF")
        }
        _ => None,
    };
    if let Some(why) = refused {
        return Err(unsupported(format!(
            "{why}; the declared type is {essence}"
        )));
    }

    // The first bytes, to hold the declaration against.
    let limit = state.upload_limits.of(kind);
    let mut first = Vec::new();
    let mut buffered = 0usize;
    while buffered < sniff::HEAD_LEN {
        match field.chunk().await.map_err(multipart_error)? {
            Some(chunk) => {
                buffered += chunk.len();
                first.push(chunk);
            }
            None => break,
        }
    }
    if let Some(allowed) = allowed {
        let head: Vec<u8> = first
            .iter()
            .flat_map(|c| c.iter().copied())
            .take(sniff::HEAD_LEN)
            .collect();
        let found = sniff::sniff(&head);
        if !found.is_some_and(|f| allowed.contains(&f)) {
            let content = found.map_or("not a format the declared type allows", |f| f.describe());
            return Err(unsupported(format!(
                "the declared type {essence} does not match the file's content: {content}"
            )));
        }
    }

    let (tx, rx) = mpsc::channel::<media::UploadRequest>(4);
    let header = media::UploadRequest {
        part: Some(Part::Header(media::UploadHeader {
            workspace_id: caller.workspace_id().to_owned(),
            mime_type: declared.clone(),
            size_bytes: 0,
        })),
    };
    if tx.send(header).await.is_err() {
        return Err(ApiError::Incomplete("upload stream"));
    }
    let mut client = MediaClient::new(state.upstreams.media_streams.clone());
    let mut call = std::pin::pin!(client.upload(caller.request(ReceiverStream::new(rx))));
    let feed = async move {
        let mut sent = 0u64;
        for chunk in first {
            if !forward(&tx, chunk, &mut sent, kind, limit).await? {
                return Ok(());
            }
        }
        while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
            if !forward(&tx, chunk, &mut sent, kind, limit).await? {
                return Ok(());
            }
        }
        // Dropping the sender ends the stream: the upload is complete.
        Ok::<(), ApiError>(())
    };
    tokio::pin!(feed);
    // Feed and call run together. A failed feed returns at once, dropping
    // the call: the RPC is cancelled and media keeps nothing of it.
    let answer = tokio::select! {
        fed = &mut feed => {
            fed?;
            state.within_upstream_timeout(&mut call).await?
        }
        answered = &mut call => answered,
    };
    match answer {
        Ok(blob) => Ok(blob.into_inner()),
        Err(status) if status.code() == tonic::Code::ResourceExhausted => Err(ApiError::Rejected {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            detail: status.message().to_owned(),
        }),
        Err(status) => Err(status.into()),
    }
}

/// Send `chunk` on (in pieces the media service accepts), counting it
/// against the limit. `false` when the call has ended (its answer says why).
async fn forward(
    tx: &mpsc::Sender<media::UploadRequest>,
    chunk: Bytes,
    sent: &mut u64,
    kind: UploadKind,
    limit: u64,
) -> Result<bool, ApiError> {
    *sent += chunk.len() as u64;
    if *sent > limit {
        return Err(ApiError::Rejected {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            detail: format!("a {} upload may be at most {limit} bytes", kind.as_str()),
        });
    }
    for piece in chunk.chunks(UPLOAD_CHUNK) {
        let message = media::UploadRequest {
            part: Some(Part::Chunk(piece.to_vec())),
        };
        if tx.send(message).await.is_err() {
            return Ok(false);
        }
    }
    Ok(true)
}

fn unsupported(detail: String) -> ApiError {
    ApiError::Rejected {
        status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
        detail,
    }
}

fn multipart_error(e: MultipartError) -> ApiError {
    ApiError::Rejected {
        status: e.status(),
        detail: e.body_text(),
    }
}

/// One range of a `Range: bytes=…` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RangeSpec {
    /// `bytes=first-`
    From(u64),
    /// `bytes=first-last` (inclusive)
    FromTo(u64, u64),
    /// `bytes=-length`: the last `length` bytes.
    Suffix(u64),
}

/// The one byte range of a `Range` header. `None` for anything else —
/// another unit, several ranges, bad syntax — which is then ignored and the
/// whole file sent, as RFC 9110 allows.
pub(crate) fn parse_range(value: &str) -> Option<RangeSpec> {
    let (unit, set) = value.split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") || set.contains(',') {
        return None;
    }
    let (first, last) = set.trim().split_once('-')?;
    let number = |s: &str| {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    match (first.trim().is_empty(), last.trim().is_empty()) {
        (true, true) => None,
        (true, false) => number(last).map(RangeSpec::Suffix),
        (false, true) => number(first).map(RangeSpec::From),
        (false, false) => {
            let (a, b) = (number(first)?, number(last)?);
            (a <= b).then_some(RangeSpec::FromTo(a, b))
        }
    }
}

/// Download a file, whole or one byte range.
///
/// Supports `Range: bytes=…` (one range; 206 with `Content-Range`) and
/// `If-Range` with the file's ETag (its id). A file of another workspace is
/// 404.
#[utoipa::path(
    get,
    path = "/v1/files/{id}",
    tag = "files",
    params(
        FilePath,
        ("range" = Option<String>, Header, description = "one byte range: `bytes=0-1023`, `bytes=1024-` or `bytes=-512`"),
        ("if-range" = Option<String>, Header, description = "the ETag the range is for; another one sends the whole file"),
    ),
    responses(
        (status = 200, description = "the whole file, with its MIME type", body = FileBytes, content_type = "application/octet-stream",
         headers(("accept-ranges" = String, description = "`bytes`"), ("etag" = String, description = "the file id, quoted"))),
        (status = 206, description = "the requested range", body = FileBytes, content_type = "application/octet-stream",
         headers(("content-range" = String, description = "`bytes first-last/size`"))),
        (status = 400, description = "the id is not a file id"),
        (status = 404, description = "no such file in the workspace"),
        (status = 416, description = "the range is outside the file",
         headers(("content-range" = String, description = "`bytes */size`"))),
    ),
)]
pub(crate) async fn download(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(path): ApiPath<FilePath>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = parse_file_id(&path.id)?;
    let reader = Reader::Member(&caller);
    serve(&state, &reader, id, &headers, None).await
}

/// Who reads a file: an agent (its workspace, by token) or a download link
/// (the workspace and grant it was signed for, checked by the media
/// service).
enum Reader<'a> {
    Member(&'a Caller),
    Link {
        workspace_id: String,
        grant: media::DownloadGrant,
    },
}

impl Reader<'_> {
    fn workspace_id(&self) -> &str {
        match self {
            Reader::Member(caller) => caller.workspace_id(),
            Reader::Link { workspace_id, .. } => workspace_id,
        }
    }

    fn request(
        &self,
        mut message: media::DownloadRequest,
    ) -> tonic::Request<media::DownloadRequest> {
        match self {
            Reader::Member(caller) => caller.request(message),
            Reader::Link { grant, .. } => {
                message.grant = Some(grant.clone());
                tonic::Request::new(message)
            }
        }
    }
}

/// How a link's download is presented: its file name and how long a cache
/// may keep it.
struct LinkPresentation {
    file_name: String,
    max_age_secs: i64,
}

/// Send a file, whole or the one byte range asked for.
async fn serve(
    state: &AppState,
    reader: &Reader<'_>,
    id: String,
    headers: &HeaderMap,
    link: Option<LinkPresentation>,
) -> Result<Response, ApiError> {
    let etag = format!("\"{id}\"");
    let if_range_matches = headers
        .get(header::IF_RANGE)
        .is_none_or(|v| v.to_str().is_ok_and(|v| v.trim() == etag));
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_range)
        .filter(|_| if_range_matches);

    let (offset, length) = match range {
        None => (0, None),
        Some(RangeSpec::From(first)) => (first, None),
        // `bytes=0-18446744073709551615` is a valid range of a file that
        // size: its length does not fit, and the file is shorter anyway.
        Some(RangeSpec::FromTo(first, last)) => (first, Some((last - first).saturating_add(1))),
        Some(RangeSpec::Suffix(n)) => {
            let size = size_of(state, reader, &id).await?;
            if n == 0 || size == 0 {
                return Ok(unsatisfiable(size));
            }
            let n = n.min(size);
            (size - n, Some(n))
        }
    };
    let request = media::DownloadRequest {
        workspace_id: reader.workspace_id().to_owned(),
        blob_id: id.clone(),
        offset,
        length: length.unwrap_or(0),
        grant: None,
    };
    let (blob, first, rest) = match open(state, reader, request).await {
        Ok(opened) => opened,
        Err(ApiError::Upstream(status))
            if range.is_some() && status.code() == tonic::Code::OutOfRange =>
        {
            return Ok(unsatisfiable(size_of(state, reader, &id).await?));
        }
        Err(e) => return Err(e),
    };
    let size = blob.size_bytes;
    if range.is_some() && offset >= size {
        return Ok(unsatisfiable(size));
    }
    let end = length.map_or(size, |l| offset.saturating_add(l).min(size));

    let content_type = HeaderValue::from_str(&blob.mime_type)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    let cache_control = match &link {
        None => "private, max-age=31536000, immutable".to_owned(),
        Some(link) => format!("private, max-age={}", link.max_age_secs.max(0)),
    };
    let mut response = Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, end - offset)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, &etag)
        .header(header::CACHE_CONTROL, cache_control)
        // The bytes are a contact's or an agent's, not ours: never let a
        // browser run them as something else.
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; sandbox",
        );
    if let Some(link) = &link {
        response = response.header(
            header::CONTENT_DISPOSITION,
            content_disposition(&link.file_name),
        );
    }
    if range.is_some() {
        response = response.status(StatusCode::PARTIAL_CONTENT).header(
            header::CONTENT_RANGE,
            format!("bytes {offset}-{}/{size}", end.saturating_sub(1)),
        );
    }
    // A stream error after the headers went out ends the response early,
    // so the client sees a short body rather than a wrong one.
    let chunks = tokio_stream::iter(first.map(Ok))
        .chain(rest.map(|message| message.map(|m| Bytes::from(m.chunk))))
        .map(|chunk| chunk.map_err(std::io::Error::other));
    response
        .body(Body::from_stream(chunks))
        .map_err(|_| ApiError::Incomplete("download headers"))
}

/// `inline; filename="<ASCII fallback>"; filename*=UTF-8''<percent-encoded>`
/// (RFC 6266).
fn content_disposition(file_name: &str) -> String {
    let fallback: String = file_name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded = percent_encoding::utf8_percent_encode(file_name, RFC5987);
    format!("inline; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

/// Everything but RFC 5987's `attr-char`s is percent-encoded.
const RFC5987: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// The parts of a download link's path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct LinkPath {
    /// The workspace the link was made in.
    #[param(format = Uuid)]
    pub workspace_id: String,
    /// File id (64 hex characters).
    #[param(pattern = "^[0-9a-fA-F]{64}$")]
    pub id: String,
    /// The file name the link was made for.
    pub file_name: String,
}

/// The query of a download link.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LinkQuery {
    /// When the link stops working, unix seconds.
    #[param(value_type = i64, required = true)]
    pub expires: Option<String>,
    /// The link's signature.
    #[param(value_type = String, required = true, min_length = 1, max_length = 128)]
    pub signature: Option<String>,
}

/// Download a file through a download link, without a token.
///
/// Links are made by `POST /v1/files/{id}/links` (and by the system for
/// outbound attachments that providers fetch by URL); the whole URL is the
/// credential, until it expires. Byte ranges work as for `GET /v1/files/{id}`.
#[utoipa::path(
    get,
    path = "/v1/downloads/{workspace_id}/{id}/{file_name}",
    tag = "files",
    security(()),
    params(
        LinkPath,
        LinkQuery,
        ("range" = Option<String>, Header, description = "one byte range: `bytes=0-1023`, `bytes=1024-` or `bytes=-512`"),
    ),
    responses(
        (status = 200, description = "the whole file, with its MIME type and `Content-Disposition` naming it", body = FileBytes, content_type = "application/octet-stream"),
        (status = 206, description = "the requested range", body = FileBytes, content_type = "application/octet-stream"),
        (status = 400, description = "a part of the link is malformed"),
        (status = 403, description = "the link has expired or its signature does not match"),
        (status = 404, description = "no such file in the workspace"),
        (status = 416, description = "the range is outside the file"),
    ),
)]
pub(crate) async fn download_link(
    State(state): State<AppState>,
    ApiPath(path): ApiPath<LinkPath>,
    ApiQuery(query): ApiQuery<LinkQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let workspace_id = crate::routes::parse_id("workspace_id", &path.workspace_id)?;
    let id = parse_file_id(&path.id)?;
    let expires_at: i64 = query
        .expires
        .as_deref()
        .and_then(|e| e.trim().parse().ok())
        .ok_or_else(|| {
            ApiError::invalid("expires", "expires must be the link's expiry, unix seconds")
        })?;
    let signature = query
        .signature
        .filter(|s| !s.trim().is_empty() && s.len() <= 128)
        .ok_or_else(|| ApiError::invalid("signature", "signature is required"))?;
    let grant = media::DownloadGrant {
        file_name: path.file_name.clone(),
        expires_at,
        signature,
    };
    let reader = Reader::Link {
        workspace_id,
        grant,
    };
    let link = LinkPresentation {
        file_name: path.file_name,
        // Any i64 comes in here, checked or not: `expires=-9223372036854775808`
        // must not overflow.
        max_age_secs: expires_at.saturating_sub(telenet_signing::unix_now()),
    };
    serve(&state, &reader, id, &headers, Some(link)).await
}

/// How long a link may work, in seconds (media's limits). An explicit 0,
/// which media reads as "its default", is refused like any other value
/// outside them.
const LINK_TTL_SECONDS: std::ops::RangeInclusive<u32> = 60..=604_800;

/// What `POST /v1/files/{id}/links` makes.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkBody {
    /// How long the link works, in seconds: 60 to 604 800 (7 days);
    /// default 3 600.
    #[schema(minimum = 60, maximum = 604_800)]
    pub ttl_seconds: Option<u32>,
    /// The name the file is downloaded under (at most 128 characters, no
    /// `/` or `\\`); default: the id's first 16 characters and the type's
    /// extension.
    #[schema(max_length = 128)]
    pub file_name: Option<String>,
}

/// A download link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LinkView {
    /// The URL: it serves the file to anyone who has it, without a token.
    pub url: String,
    /// When it stops working.
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// Make a download link for a file of the workspace: a URL that serves it
/// without a token until it expires, to share it with someone outside the
/// workspace. Anyone with the URL can download the file; links cannot be
/// revoked before they expire (rotate the signing key to revoke them all).
#[utoipa::path(
    post,
    path = "/v1/files/{id}/links",
    tag = "files",
    params(FilePath),
    request_body(content = Option<LinkBody>, description = "optional; an empty body makes a one-hour link"),
    responses(
        (status = 201, description = "the link", body = LinkView),
        (status = 400, description = "invalid field"),
        (status = 404, description = "no such file in the workspace"),
        (status = 409, description = "download links are not set up on this installation"),
    ),
)]
pub(crate) async fn create_link(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(path): ApiPath<FilePath>,
    OptionalJson(body): OptionalJson<LinkBody>,
) -> Result<(StatusCode, Json<LinkView>), ApiError> {
    let body = body.unwrap_or_default();
    let id = parse_file_id(&path.id)?;
    let ttl_seconds = match body.ttl_seconds {
        // Media's own default.
        None => 0,
        Some(ttl) if LINK_TTL_SECONDS.contains(&ttl) => ttl,
        Some(_) => {
            return Err(ApiError::invalid(
                "ttl_seconds",
                format!(
                    "ttl_seconds must be between {} and {}",
                    LINK_TTL_SECONDS.start(),
                    LINK_TTL_SECONDS.end()
                ),
            ));
        }
    };
    let link = make_link(
        &state,
        &caller,
        id,
        ttl_seconds,
        body.file_name.unwrap_or_default(),
    )
    .await?;
    let expires_at =
        crate::dto::time(link.expires_at.as_ref()).ok_or(ApiError::Incomplete("expires_at"))?;
    Ok((
        StatusCode::CREATED,
        Json(LinkView {
            url: link.url,
            expires_at,
        }),
    ))
}

/// Peaks of the waveform when the query does not say: the player's.
const DEFAULT_PEAKS: u32 = telenet_audio::probe::DEFAULT_PEAKS as u32;

/// The query of `GET /v1/files/{id}/audio`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AudioQuery {
    /// Slices of the waveform: 16 to 1000 (default 64).
    #[param(value_type = Option<u32>, minimum = 16, maximum = 1000)]
    pub peaks: Option<String>,
}

/// What the agent's player needs to show and play an audio file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AudioView {
    /// The file.
    pub id: String,
    /// Its container (`ogg`, `webm`, `mp4`, `mp3`, `wav`, `amr`).
    pub container: String,
    /// The audio codec (`opus`, `aac`, `mp3`, `pcm`, `amr-nb`, …).
    pub codec: String,
    /// Duration computed from the stream itself, in milliseconds.
    pub duration_ms: u64,
    /// Sample rate of the audio, Hz.
    pub sample_rate_hz: u32,
    /// Channels of the audio.
    pub channels: u32,
    /// The waveform: one peak per slice, 0 (silence) to 255 (full scale).
    pub peaks: Vec<u32>,
    /// Duration of each slice in milliseconds (the last may be shorter).
    pub slice_ms: u64,
    /// The form every browser plays (MP4/AAC or MP3).
    pub playable: PlayableView,
}

/// The browser-playable form of an audio file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PlayableView {
    /// `ready`, `pending` (being made: ask again) or `failed`.
    pub state: String,
    /// The file to play (`GET /v1/files/{file_id}`), once ready. The file
    /// itself when it already plays everywhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_id: Option<String>,
    /// Its MIME type, once ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    /// Why it could not be made (state `failed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A download link to the playable file, valid for an hour, for an
    /// `<audio src>` (which cannot send a bearer token); absent when the
    /// installation makes no download links.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// What the agent's player needs for a voice note or audio file: the
/// duration (computed from the stream, also for Chrome's recordings that
/// carry none), a waveform, and the form every browser plays — WhatsApp's
/// Ogg/Opus becomes MP4/AAC for Safari. The playable form is started by
/// the first request (inbound voice notes have it started on arrival) and
/// is `pending` until made; ask again.
#[utoipa::path(
    get,
    path = "/v1/files/{id}/audio",
    tag = "files",
    params(FilePath, AudioQuery),
    responses(
        (status = 200, description = "duration, waveform and the playable form", body = AudioView),
        (status = 400, description = "not an audio file we can read (the detail names the problem), or a bad `peaks`"),
        (status = 404, description = "no such file in the workspace"),
        (status = 409, description = "the file is over the voice-note limits (5 minutes, its size)"),
    ),
)]
pub(crate) async fn audio(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(path): ApiPath<FilePath>,
    ApiQuery(query): ApiQuery<AudioQuery>,
) -> Result<Json<AudioView>, ApiError> {
    let id = parse_file_id(&path.id)?;
    let peaks = match crate::routes::present(query.peaks.as_deref()) {
        None => DEFAULT_PEAKS,
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|peaks| (16..=1000).contains(peaks))
            .ok_or_else(|| {
                ApiError::invalid("peaks", "peaks must be an integer between 16 and 1000")
            })?,
    };
    let mut client = MediaClient::new(state.upstreams.media.clone());
    let probe = state
        .call(client.probe(caller.request(media::ProbeRequest {
            workspace_id: caller.workspace_id().to_owned(),
            blob_id: id.clone(),
            waveform_peaks: peaks,
        })))
        .await?;
    let variant = state
        .call(client.transcode(caller.request(media::TranscodeRequest {
            workspace_id: caller.workspace_id().to_owned(),
            blob_id: id.clone(),
            profile: WEB_PLAYBACK.to_owned(),
            wait_ms: 0,
        })))
        .await?;
    let stream = probe.audio.first().cloned().unwrap_or_default();
    let waveform = probe.waveform.unwrap_or_default();
    let part = variant.parts.first();
    let playable = match media::VariantState::try_from(variant.state) {
        Ok(media::VariantState::Ready) => PlayableView {
            state: "ready".into(),
            file_id: part.map(|p| p.blob_id.clone()),
            mime_type: part.map(|p| p.mime_type.clone()),
            error: None,
            url: match part {
                Some(part) => player_link(&state, &caller, &part.blob_id).await?,
                None => None,
            },
        },
        Ok(media::VariantState::Failed) => PlayableView {
            state: "failed".into(),
            file_id: None,
            mime_type: None,
            error: Some(variant.error),
            url: None,
        },
        _ => PlayableView {
            state: "pending".into(),
            file_id: None,
            mime_type: None,
            error: None,
            url: None,
        },
    };
    Ok(Json(AudioView {
        id,
        container: probe.container,
        codec: stream.codec,
        duration_ms: probe.duration_ms,
        sample_rate_hz: stream.sample_rate_hz,
        channels: stream.channels,
        peaks: waveform.peaks,
        slice_ms: waveform.slice_ms,
        playable,
    }))
}

/// How long the player's link to a playable file works, in seconds.
const PLAYER_LINK_TTL: u32 = 3_600;

/// A download link for the player, or `None` when links are not set up.
async fn player_link(
    state: &AppState,
    caller: &Caller,
    file_id: &str,
) -> Result<Option<String>, ApiError> {
    match make_link(
        state,
        caller,
        file_id.to_owned(),
        PLAYER_LINK_TTL,
        String::new(),
    )
    .await
    {
        Ok(link) => Ok(Some(link.url)),
        Err(ApiError::Upstream(status)) if status.code() == tonic::Code::FailedPrecondition => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Ask media for a download link to a file of the caller's workspace
/// (`ttl_seconds` 0: media's default; an empty name: media names it).
async fn make_link(
    state: &AppState,
    caller: &Caller,
    file_id: String,
    ttl_seconds: u32,
    file_name: String,
) -> Result<media::CreateDownloadUrlResponse, ApiError> {
    let mut client = MediaClient::new(state.upstreams.media.clone());
    let request = media::CreateDownloadUrlRequest {
        workspace_id: caller.workspace_id().to_owned(),
        blob_id: file_id,
        ttl_seconds,
        file_name,
    };
    state
        .call(client.create_download_url(caller.request(request)))
        .await
}

/// The media profile every browser plays.
const WEB_PLAYBACK: &str = telenet_audio::profiles::WEB_PLAYBACK;

/// An opened download: the blob, any bytes that came with it, the rest.
type Opened = (
    media::Blob,
    Option<Bytes>,
    tonic::Streaming<media::DownloadResponse>,
);

/// Start a download and read its first message (the blob), within the
/// upstream timeout; the bytes then stream at the client's pace.
async fn open(
    state: &AppState,
    reader: &Reader<'_>,
    request: media::DownloadRequest,
) -> Result<Opened, ApiError> {
    let mut client = MediaClient::new(state.upstreams.media_streams.clone());
    let opened = async {
        let mut stream = client.download(reader.request(request)).await?.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or(ApiError::Incomplete("download header"))?;
        let blob = first.blob.ok_or(ApiError::Incomplete("blob"))?;
        let bytes = (!first.chunk.is_empty()).then(|| Bytes::from(first.chunk));
        Ok::<_, ApiError>((blob, bytes, stream))
    };
    state.within_upstream_timeout(opened).await?
}

/// The size of a file, for ranges counted from its end and for 416s.
async fn size_of(state: &AppState, reader: &Reader<'_>, id: &str) -> Result<u64, ApiError> {
    let request = media::DownloadRequest {
        workspace_id: reader.workspace_id().to_owned(),
        blob_id: id.to_owned(),
        offset: 0,
        length: 1,
        grant: None,
    };
    Ok(open(state, reader, request).await?.0.size_bytes)
}

fn unsatisfiable(size: u64) -> Response {
    let mut response = Problem::new(
        StatusCode::RANGE_NOT_SATISFIABLE,
        "range_not_satisfiable",
        format!("the requested range is outside the file ({size} bytes)"),
    )
    .into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
        response.headers_mut().insert(header::CONTENT_RANGE, value);
    }
    response
}

/// A file id: 64 hex characters, in the lowercase form ids are stored in.
fn parse_file_id(raw: &str) -> Result<String, ApiError> {
    let id = raw.trim().to_ascii_lowercase();
    if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(id)
    } else {
        Err(ApiError::invalid(
            "id",
            "id must be a file id (64 hex characters)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_byte_range_is_understood() {
        use RangeSpec::*;
        assert_eq!(parse_range("bytes=0-99"), Some(FromTo(0, 99)));
        assert_eq!(parse_range("bytes=100-"), Some(From(100)));
        assert_eq!(parse_range("bytes=-500"), Some(Suffix(500)));
        assert_eq!(parse_range("Bytes = 5 - 9"), Some(FromTo(5, 9)));
        assert_eq!(parse_range("bytes=-0"), Some(Suffix(0)));
        for ignored in [
            "bytes=0-1,5-9",
            "items=0-9",
            "bytes=9-5",
            "bytes=-",
            "bytes=a-b",
            "bytes=+1-2",
            "bytes 0-9",
            "bytes=99999999999999999999999-",
        ] {
            assert_eq!(parse_range(ignored), None, "{ignored}");
        }
    }

    #[test]
    fn limits_cover_the_largest_kind_and_the_form() {
        let limits = UploadLimits::default();
        assert_eq!(limits.of(UploadKind::Voice), 16 * MIB);
        assert_eq!(limits.body_limit() as u64, 100 * MIB + MULTIPART_OVERHEAD);
    }

    #[test]
    fn file_ids_are_sha256_hex() {
        assert_eq!(parse_file_id(&"AB".repeat(32)).ok(), Some("ab".repeat(32)));
        assert!(parse_file_id("../etc/passwd").is_err());
        assert!(parse_file_id(&"g".repeat(64)).is_err());
    }
}
