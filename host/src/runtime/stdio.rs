//! Guest stdout/stderr: forwarded line by line to `tracing` (tagged with the
//! plugin) while the guest writes, within the per-call [`Budget`], and, for
//! stderr, kept per call for trap messages (a Rust guest's panic message
//! arrives there).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use super::budget::{Budget, Dropped};

/// Bytes of stderr kept per call for the trap message (its tail), and the
/// longest line forwarded; a chatty or hostile guest cannot grow host memory.
const CAPACITY: usize = 64 * 1024;

/// One guest output stream. Complete lines go to `tracing` as they are
/// written (so a long or runaway call's output shows while it runs); the
/// stream's tail is kept until `drain` for trap messages.
#[derive(Clone)]
pub struct GuestOutput {
    plugin: Arc<str>,
    stream: &'static str,
    buf: Arc<Mutex<Captured>>,
}

#[derive(Default)]
struct Captured {
    /// The current incomplete line.
    partial: Vec<u8>,
    /// What was written since the last drain, at most `CAPACITY` (the newest).
    tail: Vec<u8>,
    /// Lines and bytes forwarded in this call; the rest are counted and dropped.
    budget: Budget,
}

impl GuestOutput {
    pub fn new(plugin: &str, stream: &'static str) -> Self {
        GuestOutput {
            plugin: plugin.into(),
            stream,
            buf: Arc::default(),
        }
    }

    fn push(&self, data: &[u8]) {
        let mut c = self.buf.lock().unwrap_or_else(PoisonError::into_inner);
        c.tail.extend_from_slice(data);
        if c.tail.len() > CAPACITY {
            let cut = c.tail.len() - CAPACITY;
            c.tail.drain(..cut);
        }
        let mut rest = data;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            let mut line = std::mem::take(&mut c.partial);
            line.extend_from_slice(&rest[..nl]);
            self.forward(&mut c, &line);
            rest = &rest[nl + 1..];
        }
        let room = CAPACITY.saturating_sub(c.partial.len());
        c.partial.extend_from_slice(&rest[..rest.len().min(room)]);
    }

    fn forward(&self, c: &mut Captured, line: &[u8]) {
        if line.is_empty() || !c.budget.admit(line.len()) {
            return;
        }
        let line = String::from_utf8_lossy(line);
        let plugin = &*self.plugin;
        match self.stream {
            "stderr" => {
                tracing::warn!(target: "evhost::plugin", plugin, stream = self.stream, "{line}")
            }
            _ => tracing::info!(target: "evhost::plugin", plugin, stream = self.stream, "{line}"),
        }
    }

    /// Ends the call's output: forwards an unfinished last line and returns
    /// the stream's tail since the last drain, as lossy UTF-8, and what the
    /// budget dropped (the caller reports it once for the whole call).
    pub fn drain(&self) -> (String, Dropped) {
        let mut c = self.buf.lock().unwrap_or_else(PoisonError::into_inner);
        let partial = std::mem::take(&mut c.partial);
        self.forward(&mut c, &partial);
        let dropped = c.budget.finish();
        let text = String::from_utf8_lossy(&c.tail).into_owned();
        *c = Captured::default();
        (text, dropped)
    }

    pub fn name(&self) -> &'static str {
        self.stream
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(CAPACITY)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
