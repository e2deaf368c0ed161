//! The access log (`--access-log stdout|FILE`): one JSON line per public HTTP request and per
//! public TCP connection, written when it ends. (Who may enter a tunnel is `access/`; this
//! only records what came through.)
//!
//! - The edges hand finished [`Record`]s to [`AccessLog::write`], which never blocks: the
//!   lines go through a bounded queue to a thread of their own, which writes them through a
//!   buffer and flushes whenever the queue runs empty. A relay whose disk cannot keep up drops
//!   lines rather than stall visitors, and counts them (`postern_access_log_dropped_total`).
//! - [`AccessLog::reopen`] (on SIGHUP, with every reload) reopens the file by name, so
//!   logrotate can move it away and signal the relay.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::time::{Duration, SystemTime};

use postern_transport::splice::{Meter, Pace};
use prometheus::IntCounter;
use serde::Serialize;
use tracing::warn;

use crate::config::AccessLogTo;
use crate::tunnel::TunnelInfo;

/// Lines queued for the writer before new ones are dropped.
pub const QUEUE: usize = 16 * 1024;

/// What a public HTTP request or TCP connection did, as one JSON line.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Record {
    /// When it ended, RFC 3339 in UTC with milliseconds.
    pub time: String,
    /// `http` (a request, upgrades included) or `tcp` (a connection).
    pub kind: &'static str,
    /// The tunnel's name; `null` when the relay answered without one (unknown host, refused).
    pub tunnel: Option<String>,
    /// Subject of the credential that opened the tunnel.
    pub owner: Option<String>,
    /// The visitor's address.
    pub peer: String,
    /// HTTP method.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Host the request named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Path and query.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Status sent to the visitor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Bytes from the visitor toward the local service (request body, or TCP bytes).
    pub bytes_in: u64,
    /// Bytes toward the visitor (response body, or TCP bytes).
    pub bytes_out: u64,
    /// From the request's arrival (or the connection's acceptance) to its end, in ms.
    pub duration_ms: f64,
    /// How a TCP connection ended: `closed` when both sides finished, otherwise the fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub close: Option<String>,
}

impl Record {
    /// A record of `kind` for the visitor at `peer`, to be filled in and [stamped](Self::stamp).
    pub fn new(kind: &'static str, peer: SocketAddr) -> Self {
        Self {
            time: String::new(),
            kind,
            tunnel: None,
            owner: None,
            peer: peer.to_string(),
            method: None,
            host: None,
            path: None,
            status: None,
            bytes_in: 0,
            bytes_out: 0,
            duration_ms: 0.0,
            close: None,
        }
    }

    /// A public TCP connection to `tunnel` that moved `bytes` (in, out) and ended after
    /// `elapsed`, `close` saying how.
    pub fn tcp(tunnel: &TunnelInfo, peer: SocketAddr, elapsed: Duration, bytes: (u64, u64), close: String) -> Self {
        let mut record = Self::new("tcp", peer);
        record.tunnel = Some(tunnel.name.clone());
        record.owner = Some(tunnel.owner.clone());
        (record.bytes_in, record.bytes_out) = bytes;
        record.close = Some(close);
        record.stamp(elapsed);
        record
    }

    /// Stamps the record as ending now, after `elapsed`.
    pub fn stamp(&mut self, elapsed: Duration) {
        self.time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        self.duration_ms = crate::clock::millis(elapsed);
    }
}

/// A [`Meter`] that also counts one connection's bytes for its record, then passes each
/// count on to `inner` (the tunnel's meter, which may ask for a pause).
#[derive(Debug)]
pub struct Tally<'a, M> {
    inner: &'a M,
    read: AtomicU64,
    written: AtomicU64,
}

impl<'a, M: Meter> Tally<'a, M> {
    /// Counts on top of `inner`.
    pub fn new(inner: &'a M) -> Self {
        Self { inner, read: AtomicU64::new(0), written: AtomicU64::new(0) }
    }

    /// Bytes read from the public socket, and written to it, so far.
    pub fn totals(&self) -> (u64, u64) {
        (self.read.load(Ordering::Relaxed), self.written.load(Ordering::Relaxed))
    }
}

impl<M: Meter> Meter for Tally<'_, M> {
    fn read(&self, n: u64) -> Pace {
        self.read.fetch_add(n, Ordering::Relaxed);
        self.inner.read(n)
    }

    fn written(&self, n: u64) -> Pace {
        self.written.fetch_add(n, Ordering::Relaxed);
        self.inner.written(n)
    }
}

#[derive(Debug)]
enum Line {
    Record(Box<Record>),
    Reopen,
}

/// Where access records go: nowhere (the default), or to the writer thread.
#[derive(Debug, Clone, Default)]
pub struct AccessLog {
    queue: Option<(SyncSender<Line>, IntCounter)>,
}

/// The access log could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("access log {path}: {source}")]
pub struct AccessLogError {
    path: String,
    source: std::io::Error,
}

impl AccessLog {
    /// Starts writing to `to`; `dropped` counts lines the writer could not keep up with.
    /// Opening the file is checked here, so a bad path fails at start, not later.
    pub fn start(to: &AccessLogTo, dropped: IntCounter) -> Result<Self, AccessLogError> {
        let sink = match to {
            AccessLogTo::Off => return Ok(Self::default()),
            AccessLogTo::Stdout => Sink::Stdout(BufWriter::new(std::io::stdout())),
            AccessLogTo::File(path) => Sink::File(BufWriter::new(open(path)?), path.clone()),
        };
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("postern-access-log".into())
            .spawn(move || writer(rx, sink))
            .map_err(|source| AccessLogError { path: "(writer thread)".into(), source })?;
        Ok(Self { queue: Some((tx, dropped)) })
    }

    /// Whether records are written at all (the edges skip building them otherwise).
    pub fn enabled(&self) -> bool {
        self.queue.is_some()
    }

    /// Queues `record`; drops (and counts) it when the writer is this far behind.
    pub fn write(&self, record: Record) {
        if let Some((tx, dropped)) = &self.queue {
            if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
                tx.try_send(Line::Record(Box::new(record)))
            {
                dropped.inc();
            }
        }
    }

    /// Reopens the file by its name (after logrotate moved it); a no-op for stdout.
    pub fn reopen(&self) {
        if let Some((tx, _)) = &self.queue {
            // Never wait on a runtime thread: a writer this far behind is stuck on its disk.
            if tx.try_send(Line::Reopen).is_err() {
                warn!("the access log's writer is behind; not reopened (send SIGHUP again later)");
            }
        }
    }
}

fn open(path: &Path) -> Result<File, AccessLogError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| AccessLogError { path: path.display().to_string(), source })
}

enum Sink {
    Stdout(BufWriter<std::io::Stdout>),
    File(BufWriter<File>, PathBuf),
}

impl Sink {
    fn out(&mut self) -> &mut dyn Write {
        match self {
            Sink::Stdout(w) => w,
            Sink::File(w, _) => w,
        }
    }
}

/// The writer thread: until every sender is gone (the relay stopped), writes lines as they
/// come and flushes whenever none are waiting.
fn writer(rx: Receiver<Line>, mut sink: Sink) {
    let mut failing = false;
    while let Ok(mut line) = rx.recv() {
        loop {
            match line {
                Line::Record(record) => {
                    let mut bytes = serde_json::to_vec(&record).unwrap_or_default();
                    bytes.push(b'\n');
                    report(&mut failing, sink.out().write_all(&bytes));
                }
                Line::Reopen => {
                    report(&mut failing, sink.out().flush());
                    if let Sink::File(w, path) = &mut sink {
                        match open(path) {
                            Ok(file) => *w = BufWriter::new(file),
                            Err(e) => {
                                warn!(error = %e, "could not reopen the access log; still writing to the old file")
                            }
                        }
                    }
                }
            }
            match rx.try_recv() {
                Ok(next) => line = next,
                Err(_) => break,
            }
        }
        report(&mut failing, sink.out().flush());
    }
}

/// Logs a write failure once per run of failures (a full disk would otherwise flood the log).
fn report(failing: &mut bool, result: std::io::Result<()>) {
    match result {
        Ok(()) => *failing = false,
        Err(e) if !*failing => {
            *failing = true;
            warn!(error = %e, "could not write the access log");
        }
        Err(_) => {}
    }
}
