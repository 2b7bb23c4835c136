//! Graceful shutdown. SIGTERM or SIGINT moves the server to `Draining`: no new connections or
//! replies, running ones go on for the grace period. Then `Stopping`: running replies end as a
//! Stop would end them (saved as interrupted), websockets close with 1001. A second signal skips
//! the grace. Open connections and websockets are counted so the server knows when it is done.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::sync::{watch, Notify};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Running,
    /// No new work; what runs may finish.
    Draining,
    /// Everything that still runs is being stopped.
    Stopping,
}

/// The server's shutdown state, shared by the accept loop, handlers and websockets.
#[derive(Clone)]
pub struct Shutdown {
    phase: Arc<watch::Sender<Phase>>,
    open: Arc<Open>,
}

#[derive(Default)]
struct Open {
    count: AtomicUsize,
    changed: Notify,
}

/// Held by an open connection or websocket; the count drops with it.
pub struct Held(Arc<Open>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
        self.0.changed.notify_waiters();
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Self {
            phase: Arc::new(watch::channel(Phase::Running).0),
            open: Arc::default(),
        }
    }
}

impl Shutdown {
    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    /// Moves forward to `phase` (never back).
    pub fn advance(&self, phase: Phase) {
        self.phase.send_if_modified(|current| {
            let later = phase > *current;
            if later {
                *current = phase;
            }
            later
        });
    }

    /// Counts one open connection or websocket until the guard is dropped.
    pub fn hold(&self) -> Held {
        self.open.count.fetch_add(1, Ordering::AcqRel);
        Held(self.open.clone())
    }

    pub fn open(&self) -> usize {
        self.open.count.load(Ordering::Acquire)
    }

    /// Waits until nothing is open and `idle()` agrees, or `limit` passes; `true` when done.
    pub async fn settled(&self, limit: Duration, idle: impl Fn() -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let changed = self.open.changed.notified();
            if self.open() == 0 && idle() {
                return true;
            }
            // Background work (a reply without a connection) is polled, connections notify.
            let poll = tokio::time::sleep(Duration::from_millis(50));
            tokio::select! {
                _ = changed => {}
                _ = poll => {}
                _ = tokio::time::sleep_until(deadline) => return false,
            }
        }
    }
}

/// Resolves once `phase` has left `Running` (or its sender is gone).
pub async fn left_running(phase: &mut watch::Receiver<Phase>) {
    // The borrow the wait returns is dropped here, not held across another await.
    let _ = phase.wait_for(|p| *p != Phase::Running).await.map(|_| ());
}

/// Resolves at the next SIGTERM or SIGINT.
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn phases_only_move_forward_and_settling_waits_for_what_is_open() {
        let shutdown = Shutdown::default();
        let phases = shutdown.subscribe();
        shutdown.advance(Phase::Stopping);
        shutdown.advance(Phase::Draining);
        assert_eq!(shutdown.phase(), Phase::Stopping);
        assert!(phases.has_changed().unwrap());

        let held = shutdown.hold();
        assert!(!shutdown.settled(Duration::from_millis(50), || true).await);
        let waiter = {
            let shutdown = shutdown.clone();
            tokio::spawn(async move { shutdown.settled(Duration::from_secs(5), || true).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(held);
        assert!(waiter.await.unwrap());
    }
}
