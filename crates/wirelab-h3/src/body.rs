//! h3 request streams seen as HTTP bodies, so the shared routes and readers work unchanged.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use h3::error::StreamError;
use hyper::body::{Body, Frame};

type PollData<S> = fn(&mut S, &mut Context<'_>) -> Poll<Result<Option<Bytes>, StreamError>>;

/// The DATA frames of an h3 stream (server request or client response) as a body.
pub(crate) struct RecvBody<S> {
    stream: S,
    poll: PollData<S>,
    done: bool,
}

impl<S> RecvBody<S> {
    pub(crate) fn new(stream: S, poll: PollData<S>) -> Self {
        Self {
            stream,
            poll,
            done: false,
        }
    }

    /// The stream the body reads.
    pub(crate) fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Ends the body: no more frames are read.
    pub(crate) fn set_done(&mut self) {
        self.done = true;
    }
}

/// Copies a received chunk out of h3's buffer type (usually no copy: it is `Bytes` inside).
pub(crate) fn to_bytes(mut b: impl Buf) -> Bytes {
    b.copy_to_bytes(b.remaining())
}

impl<S: Unpin> Body for RecvBody<S> {
    type Data = Bytes;
    type Error = StreamError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let this = &mut *self;
        match (this.poll)(&mut this.stream, cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(Some(b))) => Poll::Ready(Some(Ok(Frame::data(b)))),
            Poll::Ready(Ok(None)) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Err(e)) => {
                this.done = true;
                Poll::Ready(Some(Err(e)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}
