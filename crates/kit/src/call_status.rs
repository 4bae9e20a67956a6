//! One gRPC response body for both ends of a call: it follows the call's
//! status (the `grpc-status` of a trailers-only answer's headers, or of the
//! trailers) and hands it to a recorder once, when the body ends. The
//! server's metrics layer ([`crate::metrics`]) and the client stack
//! ([`crate::client`]) each record their own way.

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::Code;

/// The code in the `grpc-status` entry of a response's headers or trailers.
pub(crate) fn grpc_status(headers: &http::HeaderMap) -> Option<Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    Some(Code::from_i32(value.parse().ok()?))
}

/// Where a finished call goes. `E` is the error of the response bodies it
/// is told about.
pub(crate) trait RecordCall<E> {
    /// The code of a call whose response body failed with `error`.
    fn code_of_error(&self, error: &E) -> Code;
    /// The code of a call whose response ended without a status.
    fn code_without_status(&self) -> Code;
    /// Records the call, ended with `code`.
    fn record(self, code: Code);
}

/// A response body that records its call when it ends: with the status
/// seen, or CANCELLED when it is dropped before a status went by (the other
/// side went away). Without a recorder it only passes the body on.
pub(crate) struct StatusBody<B, R>
where
    B: HttpBody,
    R: RecordCall<B::Error>,
{
    inner: B,
    call: Option<Call<R>>,
}

/// A call being followed: its recorder and the status seen so far.
struct Call<R> {
    recorder: R,
    code: Option<Code>,
}

impl<B, R> StatusBody<B, R>
where
    B: HttpBody,
    R: RecordCall<B::Error>,
{
    /// `response` with its body followed for `recorder`. A trailers-only
    /// answer (every unary error) carries its status in the headers.
    pub(crate) fn wrap(
        response: http::Response<B>,
        recorder: Option<R>,
    ) -> http::Response<StatusBody<B, R>> {
        let (parts, inner) = response.into_parts();
        let code = grpc_status(&parts.headers);
        let call = recorder.map(|recorder| Call { recorder, code });
        http::Response::from_parts(parts, StatusBody { inner, call })
    }
}

impl<B, R> Drop for StatusBody<B, R>
where
    B: HttpBody,
    R: RecordCall<B::Error>,
{
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            call.recorder.record(call.code.unwrap_or(Code::Cancelled));
        }
    }
}

impl<B, R> HttpBody for StatusBody<B, R>
where
    B: HttpBody + Unpin,
    R: RecordCall<B::Error> + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Some(call) = this.call.as_mut() {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(trailers) = frame.trailers_ref() {
                        call.code = grpc_status(trailers).or(call.code);
                    }
                }
                Poll::Ready(Some(Err(error))) => {
                    call.code = Some(call.recorder.code_of_error(error));
                }
                Poll::Ready(None) | Poll::Pending => {}
            }
        }
        if matches!(polled, Poll::Ready(None))
            && let Some(call) = this.call.take()
        {
            let code = call
                .code
                .unwrap_or_else(|| call.recorder.code_without_status());
            call.recorder.record(code);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
