//! The accept loop: HTTP/1.1 (and websocket upgrades) with the limits axum's `serve` does not
//! set — a deadline for a request's headers (slowloris), writes that may not stall, a cap on
//! open connections — and graceful shutdown: on `Draining` no connection is accepted and open
//! ones finish the request in hand, then close.

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use axum::{extract::ConnectInfo, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::Semaphore};
use tower::ServiceExt;

use super::{
    shutdown::{left_running, Phase, Shutdown},
    write_timeout::WriteTimeout,
};
use crate::config::Limits;

/// Serves `router` on `listener` until the shutdown leaves `Running`; returns once the listener
/// is closed (connections still open finish on their own tasks, counted by `shutdown`).
pub async fn accept(listener: TcpListener, router: Router, limits: Limits, shutdown: Shutdown) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut phase = shutdown.subscribe();
    loop {
        // Beyond the cap, connections wait in the kernel's backlog rather than being refused.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
            _ = left_running(&mut phase) => return,
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = left_running(&mut phase) => return,
        };
        let _ = stream.set_nodelay(true);
        let held = shutdown.hold();
        let router = router.clone();
        let limits = limits.clone();
        let phase = shutdown.subscribe();
        tokio::spawn(async move {
            serve_connection(stream, remote, router, &limits, phase).await;
            drop((slot, held));
        });
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    remote: SocketAddr,
    router: Router,
    limits: &Limits,
    mut phase: tokio::sync::watch::Receiver<Phase>,
) {
    let socket = ConnectionSocket(std::os::fd::AsRawFd::as_raw_fd(&stream));
    let io = TokioIo::new(WriteTimeout::new(stream, limits.send_timeout));
    let service = hyper::service::service_fn(move |mut request: hyper::Request<_>| {
        // Handlers learn the client's address as with axum's `into_make_service_with_connect_info`.
        request.extensions_mut().insert(ConnectInfo(remote));
        request.extensions_mut().insert(socket);
        let router = router.clone();
        async move {
            let response = router
                .oneshot(request.map(axum::body::Body::new))
                .await
                .unwrap_or_else(|never: Infallible| match never {});
            Ok::<_, Infallible>(response)
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(connection);
    let mut draining = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    // Header timeouts, resets, stalled writes: the client's doing, not an error of ours.
                    tracing::debug!(%remote, "connection ended: {e}");
                }
                return;
            }
            _ = left_running(&mut phase), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// The socket of the connection a request came on. Valid while the request is handled: the
/// connection's own task owns the socket and polls the handler.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionSocket(std::os::fd::RawFd);

/// Send buffer of a connection that streams a reply.
pub const STREAM_SEND_BUFFER: usize = 16 * 1024;

impl ConnectionSocket {
    /// Gives a connection that streams a reply a small send buffer. The kernel otherwise grows
    /// it to megabytes, more than any reply: a client that stopped reading would never be
    /// noticed. With it, what the client leaves unread fills the buffer within a few hundred
    /// tokens, the next write stalls, and the send timeout ends the reply. 16 KiB is still
    /// far above what a token stream needs in flight.
    pub fn for_streaming(self) {
        let size = STREAM_SEND_BUFFER as libc::c_int;
        // SAFETY: setsockopt on a socket this connection owns (see the type's note), with a
        // pointer to a live c_int and its exact length.
        let rc = unsafe {
            libc::setsockopt(
                self.0,
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            tracing::debug!(
                "cannot shrink a stream's send buffer: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Route layer for the routes that stream replies (websockets and server-sent events).
pub async fn streaming(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if let Some(socket) = request.extensions().get::<ConnectionSocket>() {
        socket.for_streaming();
    }
    next.run(request).await
}
