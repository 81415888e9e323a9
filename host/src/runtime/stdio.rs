//! Guest stdout/stderr: captured per instance, drained after each call into
//! `tracing` (tagged with the plugin) and, for stderr, into trap messages
//! (a Rust guest's panic message arrives there).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes kept per stream between drains; output beyond it is dropped, so a
/// chatty or hostile guest cannot grow host memory.
const CAPACITY: usize = 64 * 1024;

#[derive(Clone, Default)]
pub struct GuestOutput {
    buf: Arc<Mutex<Captured>>,
}

#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    dropped: usize,
}

impl GuestOutput {
    fn push(&self, data: &[u8]) {
        let mut c = self.buf.lock().unwrap_or_else(PoisonError::into_inner);
        let room = CAPACITY.saturating_sub(c.bytes.len());
        let take = room.min(data.len());
        c.bytes.extend_from_slice(&data[..take]);
        c.dropped += data.len() - take;
    }

    /// Takes what was written since the last drain, as lossy UTF-8.
    pub fn drain(&self) -> String {
        let mut c = self.buf.lock().unwrap_or_else(PoisonError::into_inner);
        let mut text = String::from_utf8_lossy(&c.bytes).into_owned();
        if c.dropped > 0 {
            text.push_str(&format!("\n[{} bytes of output dropped]", c.dropped));
        }
        c.bytes.clear();
        c.dropped = 0;
        text
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
