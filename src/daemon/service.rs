//! Living under systemd: the sd_notify protocol, signals, and where logs go.
//!
//! - [`Notifier`] speaks sd_notify (`READY=1`, `STATUS=`, `WATCHDOG=1`, `RELOADING=1`,
//!   `STOPPING=1`) on `$NOTIFY_SOCKET` through the pure-Rust `sd-notify` crate; without the
//!   variable every call is a no-op, so the daemon runs the same in a terminal.
//! - [`signals`] turns SIGTERM, SIGINT and SIGHUP into messages on a channel: the handlers
//!   only write to a self-pipe (signal-hook), everything else happens on ordinary threads.
//! - [`init_logging`] sends tracing events to journald, with structured fields (`KEY=`,
//!   `ENTRY=`, `STAGE=`, …), when stderr is connected to the journal (systemd sets
//!   `$JOURNAL_STREAM`), and readable text to stderr otherwise.

use std::io::{self, IsTerminal};
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use sd_notify::NotifyState;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// A signal the daemon acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM or SIGINT: stop claiming, drain, exit 0.
    Stop,
    /// SIGHUP: reload the configuration and the models.
    Reload,
}

/// Starts a thread that forwards SIGTERM, SIGINT and SIGHUP.
pub fn signals() -> io::Result<Receiver<Signal>> {
    use signal_hook::consts::signal::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let message = if signal == SIGHUP {
                    Signal::Reload
                } else {
                    Signal::Stop
                };
                if tx.send(message).is_err() {
                    break;
                }
            }
        })?;
    Ok(rx)
}

/// A message for the service manager.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Message {
    Ready,
    Status(String),
    Watchdog,
    Reloading,
    Stopping,
}

/// The sd_notify side of the daemon.
///
/// Datagrams go out from a thread of their own: a send blocks when the manager is not reading
/// (a socket's queue holds only a few datagrams), and that must never stop the main thread from
/// handling SIGTERM. If the queue to that thread fills up, messages are dropped — and with them
/// watchdog pings, which is right: a manager that cannot be told is one that will restart us.
#[derive(Debug)]
pub struct Notifier {
    last_status: String,
    sender: Option<Sender<Message>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Default for Notifier {
    fn default() -> Self {
        Notifier::new()
    }
}

impl Notifier {
    /// A notifier; without `$NOTIFY_SOCKET` every call is a no-op.
    pub fn new() -> Notifier {
        let mut notifier = Notifier {
            last_status: String::new(),
            sender: None,
            thread: None,
        };
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            return notifier;
        }
        let (tx, rx) = crossbeam_channel::bounded::<Message>(64);
        let thread = std::thread::Builder::new()
            .name("sd-notify".into())
            .spawn(move || {
                for message in rx {
                    let now;
                    let states: Vec<NotifyState> = match &message {
                        Message::Ready => vec![NotifyState::Ready],
                        Message::Status(s) => vec![NotifyState::Status(s)],
                        Message::Watchdog => vec![NotifyState::Watchdog],
                        Message::Stopping => vec![NotifyState::Stopping],
                        Message::Reloading => match NotifyState::monotonic_usec_now() {
                            Ok(t) => {
                                now = t;
                                vec![NotifyState::Reloading, now]
                            }
                            Err(_) => vec![NotifyState::Reloading],
                        },
                    };
                    if let Err(error) = sd_notify::notify(&states) {
                        tracing::warn!(%error, "cannot notify systemd");
                    }
                }
            });
        match thread {
            Ok(thread) => {
                notifier.sender = Some(tx);
                notifier.thread = Some(thread);
            }
            Err(error) => tracing::warn!(%error, "cannot start the sd_notify thread"),
        }
        notifier
    }

    /// How often to ping the watchdog (half of `WatchdogSec`), when systemd asks for it.
    pub fn watchdog_interval() -> Option<Duration> {
        sd_notify::watchdog_enabled().map(|d| d / 2)
    }

    fn send(&self, message: Message) {
        if let Some(tx) = &self.sender
            && tx.try_send(message).is_err()
        {
            tracing::warn!("systemd is not reading notifications; one was dropped");
        }
    }

    pub fn ready(&self) {
        self.send(Message::Ready);
    }

    /// Sends `STATUS=` when it changed since the last call.
    pub fn status(&mut self, status: &str) {
        if status != self.last_status {
            self.send(Message::Status(status.to_string()));
            self.last_status = status.to_string();
        }
    }

    pub fn watchdog(&self) {
        self.send(Message::Watchdog);
    }

    pub fn reloading(&self) {
        self.send(Message::Reloading);
    }

    pub fn stopping(&self) {
        self.send(Message::Stopping);
    }
}

impl Drop for Notifier {
    /// Delivers what is queued (`STOPPING=1` above all), waiting at most a second.
    fn drop(&mut self) {
        drop(self.sender.take());
        if let Some(thread) = self.thread.take() {
            let deadline = std::time::Instant::now() + Duration::from_secs(1);
            while !thread.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
    }
}

/// True when stderr is the journal stream systemd set up for this service.
fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

/// Installs the global tracing subscriber: journald under systemd, text on stderr otherwise.
/// `RUST_LOG` sets the level (default `info`).
pub fn init_logging() {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let journald = if stderr_is_journal() {
        tracing_journald::layer().ok()
    } else {
        None
    };
    match journald {
        Some(layer) => tracing_subscriber::registry()
            .with(
                // Fields as they are named in the code, upper-cased (`ENTRY=`, `KEY=`), so
                // that `journalctl -u tracerd ENTRY=…` finds one study's lines.
                layer
                    .with_syslog_identifier("tracerd".into())
                    .with_field_prefix(None)
                    .with_filter(filter()),
            )
            .init(),
        None => tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(io::stderr)
                    .with_ansi(io::stderr().is_terminal())
                    .with_filter(filter()),
            )
            .init(),
    }
}
