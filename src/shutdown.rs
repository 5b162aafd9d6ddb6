//! Shutdown on SIGINT and SIGTERM: one handle the signal listener trips and every run watches,
//! so an interrupted run stops reading, rolls back its open window and says so.

use std::fmt;

use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Interrupt,
    Terminate,
}

impl Signal {
    /// The conventional exit code of a process stopped by this signal: 128 + its number.
    pub fn exit_code(self) -> u8 {
        match self {
            Signal::Interrupt => 130,
            Signal::Terminate => 143,
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
        })
    }
}

/// A cheap, cloneable view of whether shutdown was requested, and by which signal.
#[derive(Clone)]
pub struct Shutdown {
    requested: watch::Receiver<Option<Signal>>,
}

/// Trips the [`Shutdown`] it was made with.
pub struct Trigger(watch::Sender<Option<Signal>>);

impl Trigger {
    pub fn trip(&self, signal: Signal) {
        self.0
            .send_if_modified(|current| current.replace(signal).is_none());
    }
}

impl Shutdown {
    pub fn new() -> (Trigger, Shutdown) {
        let (sender, requested) = watch::channel(None);
        (Trigger(sender), Shutdown { requested })
    }

    /// Start listening for SIGINT and SIGTERM on the current runtime.
    pub fn listen() -> std::io::Result<Shutdown> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let (trigger, shutdown) = Shutdown::new();
        tokio::spawn(async move {
            let received = tokio::select! {
                _ = interrupt.recv() => Signal::Interrupt,
                _ = terminate.recv() => Signal::Terminate,
            };
            tracing::warn!(signal = %received, "shutdown requested");
            trigger.trip(received);
            // Keep the trigger (and so the channel) alive: later waiters must still see it.
            std::future::pending::<()>().await;
        });
        Ok(shutdown)
    }

    pub fn signal(&self) -> Option<Signal> {
        *self.requested.borrow()
    }

    /// Resolves when shutdown is requested.
    pub async fn requested(&self) -> Signal {
        let mut requested = self.requested.clone();
        // Copy the signal out before any other await: the channel's guard is not `Send`.
        let signal = requested
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|s| *s);
        match signal {
            Some(signal) => signal,
            // The trigger is gone without tripping: shutdown will never be requested.
            None => std::future::pending().await,
        }
    }
}

/// When a run stops: `drain` lets the open window finish and stops before the next one;
/// `abort` rolls the open window back. `run-job` trips both at the first signal; the daemon
/// trips `drain` at once and `abort` when the shutdown grace runs out.
#[derive(Clone)]
pub struct Stop {
    pub drain: Shutdown,
    pub abort: Shutdown,
}

impl Stop {
    pub fn at_once(shutdown: Shutdown) -> Stop {
        Stop {
            drain: shutdown.clone(),
            abort: shutdown,
        }
    }
}
