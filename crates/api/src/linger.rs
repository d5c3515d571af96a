//! Lingering on a refused body: a call refused before its body was read (a
//! 403 from the token and the path, a 413 from the announced length) is
//! answered at once, and what the client still sends of the body is read
//! and thrown away in the background, for a while and up to a bound. A
//! server that closed the connection on unread bytes would reset it, and a
//! client still writing its body would lose the answer it was sent (what
//! nginx's `lingering_close` is for). A body the handler read to its end
//! costs nothing here.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use futures::StreamExt;
use http_body::{Frame, SizeHint};

/// At most this much of a refused body is read and thrown away.
const LINGER_BYTES: usize = 8 << 20;
/// For at most this long, and this long between two parts of it.
const LINGER_TIME: Duration = Duration::from_secs(10);
const LINGER_PAUSE: Duration = Duration::from_secs(2);

pub(crate) async fn layer(req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let body = Body::new(Lingering {
        inner: Some(body),
        ended: false,
    });
    next.run(Request::from_parts(parts, body)).await
}

/// A request body that, dropped before its end, is drained in the background.
struct Lingering {
    inner: Option<Body>,
    ended: bool,
}

impl HttpBody for Lingering {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), HttpBody::size_hint)
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        if self.ended || inner.is_end_stream() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let mut rest = inner.into_data_stream();
            let drained = async {
                let mut read = 0usize;
                while read < LINGER_BYTES {
                    match tokio::time::timeout(LINGER_PAUSE, rest.next()).await {
                        Ok(Some(Ok(chunk))) => read += chunk.len(),
                        _ => return,
                    }
                }
            };
            let _ = tokio::time::timeout(LINGER_TIME, drained).await;
        });
    }
}
