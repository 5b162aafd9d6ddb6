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

impl Shutdown {
    /// Start listening for SIGINT and SIGTERM on the current runtime.
    pub fn listen() -> std::io::Result<Shutdown> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let (sender, requested) = watch::channel(None);
        tokio::spawn(async move {
            let received = tokio::select! {
                _ = interrupt.recv() => Signal::Interrupt,
                _ = terminate.recv() => Signal::Terminate,
            };
            tracing::warn!(signal = %received, "shutdown requested");
            let _ = sender.send(Some(received));
        });
        Ok(Shutdown { requested })
    }

    /// A handle that is never tripped.
    pub fn never() -> Shutdown {
        let (sender, requested) = watch::channel(None);
        std::mem::forget(sender); // keep the channel open: `requested()` then waits forever
        Shutdown { requested }
    }

    pub fn signal(&self) -> Option<Signal> {
        *self.requested.borrow()
    }

    /// Resolves when shutdown is requested.
    pub async fn requested(&self) -> Signal {
        let mut requested = self.requested.clone();
        match requested.wait_for(Option::is_some).await {
            Ok(signal) => signal.expect("waited for Some"),
            Err(_) => std::future::pending().await,
        }
    }
}
