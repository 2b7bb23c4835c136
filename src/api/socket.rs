//! Websocket sessions with their limits enforced by the transport: messages and frames over the
//! cap are refused by the websocket layer itself and answered with close 1009; the socket is
//! pinged and closed when nothing (not even a pong) arrives for the idle timeout; a send the
//! client does not take within the send timeout ends the session; one client address may hold
//! only so many sockets (429 beyond); and at shutdown sockets close with 1001.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Instant,
};

use axum::{
    extract::{
        ws::{
            close_code, rejection::WebSocketUpgradeRejection, CloseFrame, Message, WebSocket,
            WebSocketUpgrade,
        },
        ConnectInfo,
    },
    response::Response,
};
use serde::{de::DeserializeOwned, Serialize};
use tokio::sync::watch;

use crate::{
    config::Limits,
    error::AppError,
    server::shutdown::{Held, Phase},
    state::App,
};

/// How long a closing socket waits for the client's answer to its close frame.
const CLOSE_LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// Open websockets per client address.
#[derive(Default)]
pub struct WebsocketClients {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One client's socket, counted until dropped.
pub struct ClientSlot {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.open.lock() {
            if let Some(count) = open.get_mut(&self.ip) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    open.remove(&self.ip);
                }
            }
        }
    }
}

impl WebsocketClients {
    fn admit(&self, ip: IpAddr, cap: usize) -> Result<ClientSlot, AppError> {
        let mut open = self
            .open
            .lock()
            .map_err(|_| AppError::internal("the websocket table was poisoned"))?;
        let count = open.entry(ip).or_insert(0);
        if *count >= cap {
            return Err(AppError::TooManyRequests {
                message: format!(
                    "this client already has {cap} websockets open; close one (a finished reply closes its own) and retry"
                ),
                retry_after_secs: 2,
            });
        }
        *count += 1;
        Ok(ClientSlot {
            open: self.open.clone(),
            ip,
        })
    }
}

/// What needs a session's attention next.
pub enum Incoming<T> {
    Message(T),
    /// A message that is not what this socket speaks.
    Invalid(String),
    /// A message or frame over the limit; the socket must close with 1009.
    TooBig,
    /// Nothing arrived for the idle timeout.
    Idle,
    /// The client closed the socket or the connection broke.
    Gone,
    /// The server moved to a shutdown phase.
    Shutdown(Phase),
}

pub struct Socket {
    ws: WebSocket,
    limits: Limits,
    last_heard: Instant,
    ping: tokio::time::Interval,
    phase: watch::Receiver<Phase>,
    closed: bool,
    _slot: ClientSlot,
    _held: Held,
}

/// Admits a websocket from `client` (cap per address, not while shutting down) and upgrades it
/// with the transport limits; `session` runs on the open socket.
pub fn upgrade<F, Fut>(
    app: &Arc<App>,
    client: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    session: F,
) -> Result<Response, AppError>
where
    F: FnOnce(Socket) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let upgrade = upgrade
        .map_err(|e| AppError::BadRequest(format!("this endpoint speaks websocket only: {e}")))?;
    let client = client.map(|axum::Extension(ConnectInfo(address))| address);
    if app.shutdown.phase() != Phase::Running {
        return Err(AppError::ShuttingDown(
            "the server is shutting down and takes no new connections; retry in a moment".into(),
        ));
    }
    let limits = app.settings.limits.clone();
    // Connections that did not come through our listener (tests' own routers) count as one.
    let ip = client.map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
    let slot = app.websockets.admit(ip, limits.max_websockets_per_client)?;
    let held = app.shutdown.hold();
    let phase = app.shutdown.subscribe();
    let max = limits.max_ws_message_bytes;
    Ok(upgrade
        .max_message_size(max)
        // Frames up to 4x the limit are read whole (bounded memory), so the message check
        // answers them with 1009 on a clean connection; larger ones are cut at their header.
        .max_frame_size(4 * max)
        .max_write_buffer_size(4 * max)
        .on_upgrade(move |ws| {
            let every = limits.websocket_ping_interval;
            let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            session(Socket {
                ws,
                limits,
                last_heard: Instant::now(),
                ping,
                phase,
                closed: false,
                _slot: slot,
                _held: held,
            })
        }))
}

fn too_big(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if matches!(
            e.downcast_ref::<tungstenite::Error>(),
            Some(tungstenite::Error::Capacity(_))
        ) {
            return true;
        }
        source = e.source();
    }
    false
}

impl Socket {
    /// The next client message or event. Pings the client on the way and answers for the
    /// idle timeout. Cancel-safe: nothing received is lost when another branch wins a select.
    pub async fn next<T: DeserializeOwned>(&mut self) -> Incoming<T> {
        loop {
            tokio::select! {
                frame = self.ws.recv() => {
                    let frame = match frame {
                        None => return Incoming::Gone,
                        Some(Err(e)) if too_big(&e) => return Incoming::TooBig,
                        Some(Err(_)) => return Incoming::Gone,
                        Some(Ok(frame)) => frame,
                    };
                    self.last_heard = Instant::now();
                    let bytes = match frame {
                        Message::Text(text) => text.as_bytes().to_vec(),
                        Message::Binary(bytes) => bytes.to_vec(),
                        Message::Ping(_) | Message::Pong(_) => continue,
                        Message::Close(_) => {
                            self.closed = true;
                            return Incoming::Gone;
                        }
                    };
                    return match serde_json::from_slice(&bytes) {
                        Ok(message) => Incoming::Message(message),
                        Err(e) => Incoming::Invalid(format!("not a message this socket understands: {e}")),
                    };
                }
                _ = self.ping.tick() => {
                    if self.last_heard.elapsed() >= self.limits.websocket_idle_timeout {
                        return Incoming::Idle;
                    }
                    if self.send_frame(Message::Ping(Default::default())).await.is_err() {
                        return Incoming::Gone;
                    }
                }
                changed = self.phase.changed() => {
                    if changed.is_err() {
                        // The server's shutdown state is gone: it is ending.
                        return Incoming::Shutdown(Phase::Stopping);
                    }
                    return Incoming::Shutdown(*self.phase.borrow_and_update());
                }
            }
        }
    }

    /// The shutdown phase now.
    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    async fn send_frame(&mut self, frame: Message) -> Result<(), ()> {
        match tokio::time::timeout(self.limits.send_timeout, self.ws.send(frame)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(()),
        }
    }

    /// Sends one JSON message; `Err` when the client is gone or took nothing for the send
    /// timeout (the session should end).
    pub async fn send<T: Serialize>(&mut self, message: &T) -> Result<(), ()> {
        let text = serde_json::to_string(message).map_err(|_| ())?;
        self.send_frame(Message::Text(text.into())).await
    }

    /// Closes with `code` and a reason the client can show.
    pub async fn close(mut self, code: u16, reason: &str) {
        if self.closed {
            return;
        }
        self.closed = true;
        let frame = CloseFrame {
            code,
            reason: reason.chars().take(120).collect::<String>().into(),
        };
        if self.send_frame(Message::Close(Some(frame))).await.is_err() {
            return;
        }
        // Read what the client still sends until it answers the close (briefly): closing a
        // socket with unread data resets it, and the client would never see our close code.
        let linger = async { while let Some(Ok(_)) = self.ws.recv().await {} };
        let _ = tokio::time::timeout(CLOSE_LINGER, linger).await;
    }

    /// Closes as the session's end calls for: 1001 when the server is shutting down, else 1000.
    pub async fn finish(self) {
        if self.phase() == Phase::Running {
            self.close(close_code::NORMAL, "done").await;
        } else {
            self.close(close_code::AWAY, "the server is shutting down")
                .await;
        }
    }

    /// Closes for what `incoming` reported, when it ends the session.
    pub async fn close_for<T>(self, incoming: &Incoming<T>) {
        match incoming {
            Incoming::TooBig => {
                let reason = format!("message over {} bytes", self.limits.max_ws_message_bytes);
                self.close(close_code::SIZE, &reason).await;
            }
            Incoming::Idle => {
                let reason = format!(
                    "nothing heard for {} s",
                    self.limits.websocket_idle_timeout.as_secs()
                );
                self.close(close_code::POLICY, &reason).await;
            }
            Incoming::Invalid(_) => self.close(close_code::INVALID, "unexpected message").await,
            Incoming::Shutdown(_) => {
                self.close(close_code::AWAY, "the server is shutting down")
                    .await
            }
            Incoming::Message(_) | Incoming::Gone => self.finish().await,
        }
    }
}

/// Relays a running job's events to the client until one `is_last`, while listening for the
/// client's `"stop"`: that, the client leaving, or a message over the cap sets `stop`. Then waits
/// for the job and closes the socket as its end calls for. Shared by the Compare and Arena
/// sockets, whose jobs stop all their models at once.
pub async fn relay<Req, E>(
    mut socket: Socket,
    mut events: tokio::sync::mpsc::Receiver<E>,
    stop: watch::Sender<bool>,
    is_last: impl Fn(&E) -> bool,
    running: tokio::task::JoinHandle<()>,
) where
    Req: DeserializeOwned,
    E: Serialize,
{
    use crate::types::ClientMsg;
    let mut ending: Option<Incoming<()>> = None;
    let mut client_here = true;
    loop {
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { break };
                let last = is_last(&event);
                if client_here && socket.send(&event).await.is_err() {
                    client_here = false;
                    let _ = stop.send(true);
                }
                if last {
                    break;
                }
            }
            incoming = socket.next::<ClientMsg<Req>>(), if client_here => match incoming {
                Incoming::Message(ClientMsg::Stop) => { let _ = stop.send(true); }
                Incoming::Message(ClientMsg::Start(_)) | Incoming::Invalid(_) | Incoming::Shutdown(_) => {}
                Incoming::TooBig => {
                    ending = Some(Incoming::TooBig);
                    client_here = false;
                    let _ = stop.send(true);
                }
                Incoming::Idle | Incoming::Gone => {
                    client_here = false;
                    let _ = stop.send(true);
                }
            },
        }
    }
    let _ = running.await;
    match ending {
        Some(cause) => socket.close_for(&cause).await,
        None => socket.finish().await,
    }
}

/// Reads the `{"start": …}` that opens a session and turns it into a job with `plan`. `None`
/// when the session ended instead — the client sent `"stop"` or left, or the start was
/// malformed or refused (answered first with `refusal(error)`) — and the socket is closed as
/// that calls for.
pub async fn read_start<Req, Job, E>(
    mut socket: Socket,
    plan: impl FnOnce(Req) -> Result<Job, AppError>,
    refusal: impl Fn(&AppError) -> E,
) -> Option<(Socket, Job)>
where
    Req: DeserializeOwned,
    E: Serialize,
{
    use crate::types::ClientMsg;
    match socket.next::<ClientMsg<Req>>().await {
        Incoming::Message(ClientMsg::Start(request)) => match plan(request) {
            Ok(job) => Some((socket, job)),
            Err(e) => {
                let _ = socket.send(&refusal(&e)).await;
                socket.finish().await;
                None
            }
        },
        Incoming::Message(ClientMsg::Stop) => {
            socket.finish().await;
            None
        }
        Incoming::Invalid(why) => {
            let _ = socket.send(&refusal(&AppError::BadRequest(why))).await;
            socket
                .close_for(&Incoming::<()>::Invalid(String::new()))
                .await;
            None
        }
        other => {
            socket.close_for(&other).await;
            None
        }
    }
}
