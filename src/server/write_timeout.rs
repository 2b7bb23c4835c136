//! A connection whose writes may not stall: when the client takes none of what we send for the
//! send timeout (its window stays shut), the write fails and the connection is dropped — with
//! it the reply it was streaming, so a client that stops reading cannot hold a model.

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::{sleep, Instant, Sleep},
};

pub struct WriteTimeout<S> {
    inner: S,
    timeout: Duration,
    /// Armed while a write is pending; reset whenever bytes go out.
    stalled_since: Pin<Box<Sleep>>,
    armed: bool,
}

impl<S> WriteTimeout<S> {
    pub fn new(inner: S, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            stalled_since: Box::pin(sleep(timeout)),
            armed: false,
        }
    }

    fn on_pending(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if !self.armed {
            self.armed = true;
            let deadline = Instant::now() + self.timeout;
            self.stalled_since.as_mut().reset(deadline);
        }
        match self.stalled_since.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client took nothing we sent for {:?}", self.timeout),
            )),
            Poll::Pending => Ok(()),
        }
    }

    fn guarded<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: impl FnOnce(Pin<&mut S>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>>
    where
        S: Unpin,
    {
        match poll(Pin::new(&mut self.inner), cx) {
            Poll::Pending => match self.on_pending(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
            ready => {
                self.armed = false;
                ready
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.guarded(cx, |inner, cx| inner.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.guarded(cx, |inner, cx| inner.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.guarded(cx, |inner, cx| inner.poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.guarded(cx, |inner, cx| inner.poll_shutdown(cx))
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[tokio::test]
    async fn a_reader_that_stops_reading_fails_the_write_after_the_timeout() {
        let (ours, _theirs) = tokio::io::duplex(1024);
        let mut stream = WriteTimeout::new(ours, Duration::from_millis(200));
        let started = std::time::Instant::now();
        let chunk = vec![0u8; 4096];
        let error = loop {
            if let Err(e) = stream.write_all(&chunk).await {
                break e;
            }
        };
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(200) && waited < Duration::from_secs(2),
            "{waited:?}"
        );
    }

    #[tokio::test]
    async fn a_slow_but_steady_reader_is_not_cut_off() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let reader = tokio::spawn(async move {
            let mut total = 0;
            let mut buf = [0u8; 64];
            while total < 2048 {
                tokio::time::sleep(Duration::from_millis(10)).await;
                total += tokio::io::AsyncReadExt::read(&mut theirs, &mut buf)
                    .await
                    .unwrap();
            }
        });
        let mut stream = WriteTimeout::new(ours, Duration::from_millis(100));
        // 2 KiB through a 64-byte pipe at 64 bytes per 10 ms: slow, never stalled for 100 ms.
        stream.write_all(&[1u8; 2048]).await.unwrap();
        reader.await.unwrap();
    }
}
