//! Whether a request's body was read to its end. A handler that answers
//! without reading it (a bad query string, an unknown token, a body over
//! its limit) leaves hyper unable to find where the next request on the
//! connection begins, so hyper closes the connection after the response.
//! Unless the response says so, a client may meanwhile send its next
//! request on it, and that request is lost to a reset it cannot tell
//! from a server that failed. So such a response says
//! `connection: close` ([`close_if_unread`]).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{CONNECTION, HeaderValue};

/// `body`, telling [`Ended`] once it has been read to its end.
#[derive(Debug)]
pub(super) struct Tracked<B> {
    body: B,
    ended: Arc<AtomicBool>,
}

/// Whether the [`Tracked`] body it came with was read to its end.
#[derive(Debug, Clone)]
pub(super) struct Ended(Arc<AtomicBool>);

impl Ended {
    fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

impl<B: Body> Tracked<B> {
    pub(super) fn new(body: B) -> (Self, Ended) {
        // A request without a body (a GET's) has nothing to read.
        let ended = Arc::new(AtomicBool::new(body.is_end_stream()));
        (
            Self {
                body,
                ended: Arc::clone(&ended),
            },
            Ended(ended),
        )
    }
}

impl<B> Body for Tracked<B>
where
    B: Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        if matches!(frame, Poll::Ready(None)) || this.body.is_end_stream() {
            this.ended.store(true, Ordering::Release);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Marks `response` `connection: close` if its request's body was not
/// read to its end.
pub(super) fn close_if_unread<T>(
    mut response: hyper::Response<T>,
    ended: &Ended,
) -> hyper::Response<T> {
    if !ended.get() {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
