//! The rapid-reset guard of an HTTP/2 client connection (CVE-2023-44487): a client that opens
//! streams and resets them before their answers end makes the load balancer and its replicas work
//! for nothing, as fast as it can send frames. The h2 library already refuses resets of streams it
//! has not handed over yet (`max_pending_accept_reset_streams`); this guard counts the rest, the
//! streams reset while ringlb was forwarding or answering them.
//!
//! Every stream holds a [`StreamGuard`] until its answer's last frame is sent; a guard dropped
//! before that is an early reset. Once [`MIN_EARLY_RESETS`] streams were reset early and they are
//! more than half of the streams the connection opened, the connection is cut off (the rule Envoy
//! and nginx follow in spirit: resets are normal, a connection made mostly of them is not).

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::task::{Context, Poll};
use tokio::sync::Notify;

/// Early resets a connection may have before the ratio is looked at.
pub const MIN_EARLY_RESETS: u32 = 100;

/// The stream counts of one HTTP/2 client connection.
#[derive(Default)]
pub struct Resets {
    opened: AtomicU32,
    early: AtomicU32,
    tripped: AtomicBool,
    cut: Notify,
}

impl Resets {
    /// A stream opened: its guard counts it as reset early unless it is finished.
    pub fn open(self: &Arc<Self>) -> StreamGuard {
        self.opened.fetch_add(1, Ordering::Relaxed);
        StreamGuard { resets: Some(Arc::clone(self)) }
    }

    /// Completes once the connection is to be cut off.
    pub async fn tripped(&self) {
        loop {
            let notified = self.cut.notified();
            if self.tripped.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    /// Streams opened and streams reset early, so far.
    pub fn counts(&self) -> (u32, u32) {
        (self.opened.load(Ordering::Relaxed), self.early.load(Ordering::Relaxed))
    }

    fn reset_early(&self) {
        let early = self.early.fetch_add(1, Ordering::Relaxed) + 1;
        let opened = self.opened.load(Ordering::Relaxed);
        if early >= MIN_EARLY_RESETS && u64::from(early) * 2 > u64::from(opened) {
            self.tripped.store(true, Ordering::Release);
            self.cut.notify_waiters();
        }
    }
}

/// One stream's place in its connection's counts.
pub struct StreamGuard {
    resets: Option<Arc<Resets>>,
}

impl StreamGuard {
    /// The stream's answer ended: not an early reset.
    fn finish(&mut self) {
        self.resets = None;
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if let Some(resets) = self.resets.take() {
            resets.reset_early();
        }
    }
}

/// An answer's body that finishes its stream's guard when its last frame has been taken.
pub struct Guarded<B> {
    inner: B,
    guard: StreamGuard,
}

impl<B> Guarded<B> {
    /// `inner`, the body of the stream `guard` counts.
    pub fn new(inner: B, guard: StreamGuard) -> Guarded<B> {
        Guarded { inner, guard }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Guarded<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(frame, Poll::Ready(None)) || this.inner.is_end_stream() {
            this.guard.finish();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    #[tokio::test]
    async fn mostly_early_resets_trip_it_and_finished_streams_do_not_count() {
        let resets = Arc::new(Resets::default());
        for _ in 0..MIN_EARLY_RESETS {
            let body = Guarded::new(Full::new(Bytes::from_static(b"ok")), resets.open());
            body.collect().await.unwrap();
        }
        for _ in 0..MIN_EARLY_RESETS {
            drop(resets.open());
        }
        assert_eq!(resets.counts(), (2 * MIN_EARLY_RESETS, MIN_EARLY_RESETS));
        assert!(!resets.tripped.load(Ordering::Acquire), "half of the streams is not more than half");
        drop(resets.open());
        tokio::time::timeout(std::time::Duration::from_secs(1), resets.tripped()).await.unwrap();
    }

    #[test]
    fn a_few_early_resets_never_trip_it() {
        let resets = Arc::new(Resets::default());
        for _ in 1..MIN_EARLY_RESETS {
            drop(resets.open());
        }
        assert!(!resets.tripped.load(Ordering::Acquire));
    }
}
