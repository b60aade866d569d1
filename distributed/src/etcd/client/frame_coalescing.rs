//! One write per request: a TCP stream that lets a gRPC request's frames
//! leave together.
//!
//! A unary gRPC call is an HTTP/2 HEADERS frame followed by a DATA frame.
//! The HTTP/2 client under etcd-client (hyper over h2) queues the HEADERS,
//! but may only queue the DATA once the connection task has opened the
//! stream — so the connection writes the HEADERS alone, and the DATA in a
//! second write a moment later. etcd then wakes up twice for one request,
//! the first time to read half of it. Go's gRPC client writes both at once.
//!
//! [`CoalescingStream`] buffers what is written and follows the frames. When asked
//! to flush while the last buffered frame is a HEADERS frame that opens a
//! request with a body still to come, it sends everything before that
//! frame, keeps the frame, and gives the scheduler one turn (it wakes
//! itself and answers "not yet"). The task that queues the DATA was woken
//! before the flush, so it runs in that turn; the next flush sends HEADERS
//! and DATA in one write. Any other flush goes out at once, and a held
//! frame is held for one turn only, whatever arrives.
//!
//! Only the write side changes; reads pass straight through.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Above this many buffered bytes, a write sends what is buffered first, so
/// a large request streams instead of growing the buffer.
const MAX_BUFFERED: usize = 64 * 1024;

/// The client's connection preface ("PRI * HTTP/2.0…", RFC 9113 §3.4)
/// comes before the first frame.
const PREFACE_LEN: usize = 24;
/// Every frame starts with a 9-byte header: length (3), type, flags, stream.
const FRAME_HEADER_LEN: usize = 9;
const HEADERS_FRAME: u8 = 0x1;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// A client connection's stream whose request HEADERS wait one scheduler
/// turn for their DATA (see the module's doc).
#[derive(Debug)]
pub(crate) struct CoalescingStream<S> {
    inner: S,
    /// Written but not yet sent.
    buffered: Vec<u8>,
    frames: FrameTracker,
    /// Whether the frames now buffered have already been held for a turn.
    held: bool,
}

impl<S> CoalescingStream<S> {
    pub(crate) fn new(inner: S) -> Self {
        CoalescingStream {
            inner,
            buffered: Vec::new(),
            frames: FrameTracker::default(),
            held: false,
        }
    }

    fn buffer(&mut self, bytes: &[u8]) {
        self.frames.observe(bytes, self.buffered.len());
        self.buffered.extend_from_slice(bytes);
    }

    /// Where the buffered request opening starts, if the buffer ends with
    /// one: a complete HEADERS frame without END_STREAM.
    fn held_back_from(&self) -> Option<usize> {
        (self.frames.at_frame_boundary() && self.frames.last_opens_request)
            .then_some(self.frames.last_start)
            .filter(|&start| start < self.buffered.len())
    }
}

impl<S: AsyncWrite + Unpin> CoalescingStream<S> {
    /// Sends the first `len` buffered bytes.
    fn send(&mut self, cx: &mut Context<'_>, mut len: usize) -> Poll<io::Result<()>> {
        while len > 0 {
            let written = ready!(
                Pin::new(&mut self.inner).poll_write(cx, &self.buffered[..len])
            )?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.buffered.drain(..written);
            self.frames.last_start = self.frames.last_start.saturating_sub(written);
            len -= written;
        }
        Poll::Ready(Ok(()))
    }

    fn send_all(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let len = self.buffered.len();
        self.send(cx, len)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for CoalescingStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CoalescingStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.buffered.len() >= MAX_BUFFERED {
            ready!(self.send_all(cx))?;
        }
        self.buffer(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.buffered.len() >= MAX_BUFFERED {
            ready!(self.send_all(cx))?;
        }
        let mut total = 0;
        for buf in bufs {
            self.buffer(buf);
            total += buf.len();
        }
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.held
            && let Some(start) = self.held_back_from()
        {
            // Everything before the request's HEADERS goes now; they wait
            // one turn for their DATA, which is queued in that turn.
            ready!(self.send(cx, start))?;
            self.held = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        ready!(self.send_all(cx))?;
        self.held = false;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        ready!(self.send_all(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Follows the HTTP/2 frames written on a client connection: where the
/// last one starts in the buffer, and whether it opens a request.
#[derive(Debug)]
struct FrameTracker {
    /// Preface bytes still to pass.
    preface_left: usize,
    /// The header of the frame being read, and how much of it has come.
    header: [u8; FRAME_HEADER_LEN],
    header_len: usize,
    /// Payload bytes of the current frame still to pass.
    payload_left: usize,
    /// Offset, in the buffer, of the last frame's first byte.
    last_start: usize,
    /// Whether the last frame is HEADERS (complete, END_HEADERS) of a
    /// request that has a body to come (no END_STREAM).
    last_opens_request: bool,
}

impl Default for FrameTracker {
    fn default() -> Self {
        FrameTracker {
            preface_left: PREFACE_LEN,
            header: [0; FRAME_HEADER_LEN],
            header_len: 0,
            payload_left: 0,
            last_start: 0,
            last_opens_request: false,
        }
    }
}

impl FrameTracker {
    /// Follows `bytes`, which land in the buffer at `offset`.
    fn observe(&mut self, mut bytes: &[u8], mut offset: usize) {
        while !bytes.is_empty() {
            let skip = if self.preface_left > 0 {
                let skip = self.preface_left.min(bytes.len());
                self.preface_left -= skip;
                skip
            } else if self.payload_left > 0 {
                let skip = self.payload_left.min(bytes.len());
                self.payload_left -= skip;
                skip
            } else {
                if self.header_len == 0 {
                    self.last_start = offset;
                    self.last_opens_request = false;
                }
                let take = (FRAME_HEADER_LEN - self.header_len).min(bytes.len());
                self.header[self.header_len..self.header_len + take]
                    .copy_from_slice(&bytes[..take]);
                self.header_len += take;
                if self.header_len == FRAME_HEADER_LEN {
                    self.header_len = 0;
                    let [l0, l1, l2, kind, flags, ..] = self.header;
                    self.payload_left =
                        usize::from_be_bytes([0, 0, 0, 0, 0, l0, l1, l2]);
                    self.last_opens_request = kind == HEADERS_FRAME
                        && flags & END_HEADERS != 0
                        && flags & END_STREAM == 0;
                }
                take
            };
            bytes = &bytes[skip..];
            offset += skip;
        }
    }

    fn at_frame_boundary(&self) -> bool {
        self.preface_left == 0 && self.header_len == 0 && self.payload_left == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncWriteExt;

    /// A writer that records each write it is given.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes.push(buf.to_vec());
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Counts how often it is woken.
    struct CountWakes(AtomicUsize);

    impl std::task::Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    const PREFACE: &[u8; PREFACE_LEN] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    fn frame(kind: u8, flags: u8, stream: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len().to_be_bytes();
        let mut frame = vec![len[5], len[6], len[7], kind, flags, 0, 0, 0, stream];
        frame.extend_from_slice(payload);
        frame
    }

    fn request_headers(stream: u8) -> Vec<u8> {
        frame(HEADERS_FRAME, END_HEADERS, stream, b"hpack")
    }

    fn data(stream: u8, end: bool) -> Vec<u8> {
        frame(0x0, if end { END_STREAM } else { 0 }, stream, b"message")
    }

    fn ping_ack() -> Vec<u8> {
        frame(0x6, 0x1, 0, &[7; 8])
    }

    /// A stream past its preface and settings, with no write recorded.
    fn connected(cx: &mut Context<'_>) -> CoalescingStream<Recorder> {
        let mut stream = CoalescingStream::new(Recorder::default());
        let settings = frame(0x4, 0, 0, &[]);
        assert!(Pin::new(&mut stream).poll_write(cx, PREFACE).is_ready());
        assert!(Pin::new(&mut stream).poll_write(cx, &settings).is_ready());
        assert!(Pin::new(&mut stream).poll_flush(cx).is_ready());
        stream.inner.writes.clear();
        stream
    }

    #[test]
    fn a_requests_headers_wait_one_turn_and_leave_with_its_data() {
        let wakes = Arc::new(CountWakes(0.into()));
        let waker = std::task::Waker::from(Arc::clone(&wakes));
        let mut cx = Context::from_waker(&waker);
        let mut stream = connected(&mut cx);
        let mut stream = Pin::new(&mut stream);

        let headers = request_headers(1);
        assert!(stream.as_mut().poll_write(&mut cx, &headers).is_ready());
        // The flush gives its turn away and asks to be polled again.
        assert!(stream.as_mut().poll_flush(&mut cx).is_pending());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert!(stream.inner.writes.is_empty());
        // Meanwhile the body is queued; the next flush sends both at once.
        let body = data(1, true);
        assert!(stream.as_mut().poll_write(&mut cx, &body).is_ready());
        assert!(stream.as_mut().poll_flush(&mut cx).is_ready());
        assert_eq!(stream.inner.writes, vec![[headers, body].concat()]);
    }

    #[test]
    fn frames_before_the_headers_are_not_held_back() {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut stream = connected(&mut cx);
        let mut stream = Pin::new(&mut stream);
        let (ack, headers) = (ping_ack(), request_headers(3));
        let both = [ack.clone(), headers.clone()].concat();
        // One vectored write carrying both frames, split mid-header.
        let slices = [
            io::IoSlice::new(&both[..ack.len() + 4]),
            io::IoSlice::new(&both[ack.len() + 4..]),
        ];
        assert!(
            stream
                .as_mut()
                .poll_write_vectored(&mut cx, &slices)
                .is_ready()
        );
        assert!(stream.as_mut().poll_flush(&mut cx).is_pending());
        assert_eq!(stream.inner.writes, vec![ack]);
        // Held one turn only: with no DATA yet, the next flush sends them.
        assert!(stream.as_mut().poll_flush(&mut cx).is_ready());
        assert_eq!(stream.inner.writes[1], headers);
    }

    #[test]
    fn other_frames_are_sent_at_once() {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut stream = connected(&mut cx);
        let mut stream = Pin::new(&mut stream);
        let request_without_body =
            frame(HEADERS_FRAME, END_HEADERS | END_STREAM, 5, b"h");
        for frames in [ping_ack(), data(1, false), request_without_body] {
            assert!(stream.as_mut().poll_write(&mut cx, &frames).is_ready());
            assert!(stream.as_mut().poll_flush(&mut cx).is_ready());
            assert_eq!(stream.inner.writes.last(), Some(&frames));
        }
        // A HEADERS frame whose header block goes on in CONTINUATION frames
        // is not a complete opening: sent as well.
        let partial = frame(HEADERS_FRAME, 0, 7, b"h");
        assert!(stream.as_mut().poll_write(&mut cx, &partial).is_ready());
        assert!(stream.as_mut().poll_flush(&mut cx).is_ready());
        assert_eq!(stream.inner.writes.last(), Some(&partial));
    }

    #[test]
    fn the_preface_is_not_taken_for_a_frame() {
        // The preface's first 9 bytes would read as a frame of type 'T'
        // with a huge length: if it were parsed, every later frame would be
        // taken for payload and never held.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut stream = CoalescingStream::new(Recorder::default());
        let mut stream = Pin::new(&mut stream);
        let start = [PREFACE.to_vec(), request_headers(1)].concat();
        assert!(stream.as_mut().poll_write(&mut cx, &start).is_ready());
        assert!(stream.as_mut().poll_flush(&mut cx).is_pending());
        assert_eq!(stream.inner.writes, vec![PREFACE.to_vec()]);
    }

    #[tokio::test]
    async fn shutdown_sends_what_is_buffered() {
        let mut stream = CoalescingStream::new(Recorder::default());
        stream.write_all(PREFACE).await.unwrap();
        stream.write_all(&request_headers(1)).await.unwrap();
        stream.shutdown().await.unwrap();
        assert_eq!(
            stream.inner.writes,
            vec![[PREFACE.to_vec(), request_headers(1)].concat()]
        );
    }

    #[tokio::test]
    async fn a_large_request_streams_instead_of_growing_the_buffer() {
        let mut stream = CoalescingStream::new(Recorder::default());
        let chunk = vec![7u8; MAX_BUFFERED];
        for _ in 0..3 {
            stream.write_all(&chunk).await.unwrap();
        }
        stream.flush().await.unwrap();
        let sent: usize = stream.inner.writes.iter().map(Vec::len).sum();
        assert_eq!(sent, 3 * MAX_BUFFERED);
        assert!(stream.buffered.capacity() < 3 * MAX_BUFFERED);
    }
}
