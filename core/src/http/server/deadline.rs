//! A request's body with a deadline: it must have arrived in full by
//! `body_timeout` after the request's head, or reading it fails. hyper
//! times the head (`header_read_timeout`) but not the body, so without
//! this a client that sends a body a byte now and then would keep its
//! handler, and its connection, forever.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use crate::node::duration;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What reading a body past its deadline gives.
#[derive(Debug, thiserror::Error)]
#[error("the request's body did not arrive within body_timeout ({})", duration::show(*.0))]
pub(super) struct BodyTimedOut(Duration);

/// `body`, failing with [`BodyTimedOut`] once `limit` has passed since it
/// was made (when its request's head was read).
#[derive(Debug)]
pub(super) struct Deadline<B> {
    body: B,
    limit: Duration,
    /// Boxed, so that the body is `Unpin` as axum wants it. The timer
    /// is registered only when it is first polled: a body never read
    /// (a GET's) costs no timer.
    expires: Pin<Box<Sleep>>,
}

impl<B> Deadline<B> {
    pub(super) fn new(body: B, limit: Duration) -> Self {
        Self {
            body,
            limit,
            expires: Box::pin(tokio::time::sleep(limit)),
        }
    }
}

impl<B> Body for Deadline<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        // What has arrived is given even at the deadline.
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match this.expires.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(BodyTimedOut(this.limit).into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Bytes;

    /// The next frame of `body`, or its end.
    async fn next<B: Body + Unpin>(body: &mut B) -> Option<Result<Frame<B::Data>, B::Error>> {
        std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_does_not_come_fails_at_its_deadline() {
        let silent = futures::stream::pending::<Result<Bytes, std::io::Error>>();
        let started = tokio::time::Instant::now();
        let mut body = Deadline::new(
            axum::body::Body::from_stream(silent),
            Duration::from_secs(30),
        );
        let error = next(&mut body)
            .await
            .expect("an error, not the end")
            .expect_err("no data came");
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        assert!(error.is::<BodyTimedOut>(), "{error}");
        assert_eq!(
            error.to_string(),
            "the request's body did not arrive within body_timeout (30s)"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_in_time_is_given_unchanged() {
        let mut body = Deadline::new(axum::body::Body::from("hello"), Duration::from_millis(10));
        assert_eq!(body.size_hint().exact(), Some(5));
        let frame = next(&mut body).await.expect("a frame").expect("data");
        assert_eq!(frame.into_data().ok(), Some(Bytes::from("hello")));
        // Past the deadline, the end is still the end.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(next(&mut body).await.is_none());
        assert!(body.is_end_stream());
    }
}
