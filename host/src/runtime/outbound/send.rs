//! [`OutboundHooks`]: the one way a plugin's request leaves the host. Checks
//! come first, in the store (synchronously, before `handle` returns the
//! future to the guest); the address check and the send run on tokio under
//! the request's deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::body::{Direction, Metered};
use super::{CallEnd, RefusalReason, Tally, Target};
use crate::runtime::context::PluginScope;

type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;
type SendFuture =
    Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), Error>> + Send>;

/// The `wasi:http` hooks of one store.
pub struct OutboundHooks {
    scope: Arc<PluginScope>,
    /// The running call's tally; `None` outside `handle`.
    call: Option<Tally>,
}

/// A request that passed the checks made in the store.
struct Admitted {
    scope: Arc<PluginScope>,
    tally: Tally,
    target: Target,
    /// `METHOD url`, for messages and logs.
    what: String,
    /// `host:port`, the metric label.
    host: String,
    method: String,
    /// Whether the matching entry names an address the daemon may listen on.
    names_address: bool,
    deadline: Instant,
    /// Whether `deadline` is the call's own (the request's timeout reaches past it).
    call_deadline: bool,
}

impl OutboundHooks {
    pub fn new(scope: Arc<PluginScope>) -> Self {
        OutboundHooks { scope, call: None }
    }

    /// Starts a call's accounting: requests from now on count against the
    /// caps and end by `deadline`.
    pub fn begin_call(&mut self, deadline: Instant, event_id: &str) {
        self.call = Some(Tally::new(deadline, event_id.to_owned()));
    }

    /// Ends the call's accounting; requests still in flight keep their own
    /// deadline but count nowhere.
    pub fn end_call(&mut self) -> CallEnd {
        match self.call.take() {
            None => CallEnd::default(),
            Some(tally) => tally.with(|t| CallEnd {
                refused: t.refused.take(),
                timed_out: t.timed_out.take(),
            }),
        }
    }

    /// The checks that need no network, in order: inside a call, under the
    /// request cap, the URL in the allowlist, the declared body within the cap.
    fn admit(&mut self, request: &http::Request<WasiBody>) -> Result<Admitted, Error> {
        let scope = self.scope.clone();
        let method = request.method().as_str().to_owned();
        let what = format!("{method} {}", request.uri());
        let grants = &scope.grants;
        let Some(tally) = self.call.clone() else {
            let message = format!(
                "plugin `{}` may not make HTTP requests outside `handle` ({what})",
                scope.name
            );
            return Err(refuse(&scope, None, RefusalReason::OutsideCall, message));
        };
        let Some(target) = Target::of(request.uri()) else {
            return Err(Error::HttpRequestUriInvalid);
        };
        let rule = grants.http.allows(&target);
        if rule.is_none() || !target.path_is_plain() {
            let (reason, has) = if grants.http.is_empty() {
                (RefusalReason::NoGrant, "it has no `http` grant".to_owned())
            } else {
                let has = format!("its `http` grant allows {}", grants.http.describe());
                (RefusalReason::NotAllowed, has)
            };
            let has = if target.path_is_plain() {
                has
            } else {
                "its path has `.`/`..` segments or %-escapes, which no grant matches".to_owned()
            };
            let scheme = if target.https { "https" } else { "http" };
            let how = grants.how_to_grant(&format!(
                "add \"{scheme}://{}:{}\" (or a path prefix of it ending in `/*`) to http under [grants]",
                target.host, target.port
            ));
            let message = format!("plugin `{}` may not request {what}: {has}{how}", scope.name);
            return Err(refuse(&scope, Some(&tally), reason, message));
        }
        let names_address = rule.is_some_and(|r| r.names_address(target.port));
        let limits = &grants.http.limits;
        let declared = request
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let over = tally.with(|t| {
            if t.requests >= limits.requests {
                Some(RefusalReason::RequestCap)
            } else if t.bytes_out.saturating_add(declared) > limits.request_bytes {
                Some(RefusalReason::RequestBytes)
            } else {
                t.requests += 1;
                None
            }
        });
        if let Some(reason) = over {
            let (what_cap, key, n) = match reason {
                RefusalReason::RequestCap => ("requests", "requests", u64::from(limits.requests)),
                _ => ("request-body bytes", "request-bytes", limits.request_bytes),
            };
            let how = grants.how_to_grant(&format!("raise `{key}` under [http]"));
            let message = format!(
                "plugin `{}` may not request {what}: over its limit of {n} {what_cap} per call{how}",
                scope.name
            );
            scope.outbound.metrics.refused(&scope.name, reason);
            tracing::warn!(target: "evhost::plugin", plugin = %scope.name, "{message}");
            return Err(match reason {
                RefusalReason::RequestCap => Error::InternalError(Some(message)),
                _ => Error::HttpRequestBodySize(Some(limits.request_bytes)),
            });
        }
        let now = Instant::now();
        let call_deadline = tally.with(|t| t.deadline);
        let own = now + limits.timeout;
        let (deadline, is_call) = if own < call_deadline {
            (own, false)
        } else {
            (call_deadline, true)
        };
        Ok(Admitted {
            host: format!("{}:{}", target.host, target.port),
            scope,
            tally,
            target,
            what,
            method,
            names_address,
            deadline,
            call_deadline: is_call,
        })
    }
}

/// Records a refused grant (it decides the call, when there is one), counts
/// it and returns the error the guest gets, which carries the message.
fn refuse(
    scope: &PluginScope,
    tally: Option<&Tally>,
    reason: RefusalReason,
    message: String,
) -> Error {
    scope.outbound.metrics.refused(&scope.name, reason);
    tracing::warn!(target: "evhost::plugin", plugin = %scope.name, reason = reason.label(), "{message}");
    if let Some(tally) = tally {
        tally.with(|t| {
            if t.refused.is_none() {
                t.refused = Some(message.clone());
            }
        });
    }
    Error::InternalError(Some(message))
}

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: IoFuture,
    ) -> SendFuture {
        match self.admit(&request) {
            Err(e) => Box::new(async move { Err(e) }),
            Ok(admitted) => Box::new(admitted.send(request, options)),
        }
    }
}

impl Admitted {
    async fn send(
        self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> Result<(http::Response<WasiBody>, IoFuture), Error> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::from_std(self.deadline);
        let outcome = tokio::time::timeout_at(deadline, self.checked_send(request, options)).await;
        let latency = started.elapsed();
        match outcome {
            Ok(Ok((response, io))) => {
                let status = response.status().as_u16();
                self.answered(Some(status), latency, None);
                let limit = self.scope.grants.http.limits.response_bytes;
                let meter = Metered::new(Direction::In, limit, self.cutoff());
                let response = response.map(|body| meter.wrap(body));
                Ok((response, io))
            }
            Ok(Err(e)) => {
                // The guest's own timeouts are cut to the deadline, so one may
                // fire a moment before `timeout_at` does: still the deadline.
                if is_timeout(&e) && Instant::now() + DEADLINE_SLACK >= self.deadline {
                    self.timed_out();
                }
                self.answered(None, latency, Some(&format!("{e}")));
                Err(e)
            }
            Err(_elapsed) => {
                self.timed_out();
                self.answered(None, latency, Some("no answer before the deadline"));
                Err(Error::HttpResponseTimeout)
            }
        }
    }

    /// The address check, then the send. For plain HTTP the connection goes
    /// to the very address that was checked (the `Host` header keeps the
    /// name), so a second DNS answer cannot point it elsewhere; over HTTPS a
    /// rebound name fails the certificate check instead.
    async fn checked_send(
        &self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> Result<(http::Response<WasiBody>, IoFuture), Error> {
        let host = self.target.host.trim_matches(['[', ']']).to_owned();
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), self.target.port))
            .await
            .map_err(|e| Error::DnsError {
                rcode: Some(e.to_string()),
                info_code: None,
            })?
            .collect();
        let Some(&first) = addrs.first() else {
            return Err(Error::DestinationNotFound);
        };
        if let Some(daemon) = self.scope.outbound.daemon.get()
            && !self.names_address
            && let Some(hit) = addrs.iter().find(|a| is_daemon(a, daemon))
        {
            let how = self.scope.grants.how_to_grant(&format!(
                "to allow it, add \"http://{daemon}\" to http under [grants]"
            ));
            let message = format!(
                "plugin `{}` may not request {}: {} is the daemon's own address ({hit}){how}",
                self.scope.name, self.what, self.target.host
            );
            return Err(refuse(
                &self.scope,
                Some(&self.tally),
                RefusalReason::DaemonAddress,
                message,
            ));
        }
        if !self.target.https {
            let path = request
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            *request.uri_mut() = http::Uri::builder()
                .scheme("http")
                .authority(first.to_string())
                .path_and_query(path)
                .build()
                .map_err(|_| Error::HttpRequestUriInvalid)?;
        }
        let limit = self.scope.grants.http.limits.request_bytes;
        let meter = Metered::new(Direction::Out, limit, self.cutoff());
        let request = request.map(|body| meter.wrap(body));
        let (response, io) =
            wasmtime_wasi_http::default_send_request(request, Some(self.clamp(options))).await?;
        Ok((response.map(|b| b.boxed_unsync()), Box::new(io) as IoFuture))
    }

    /// The guest's own timeouts, each cut to what is left of the request's.
    fn clamp(&self, options: Option<RequestOptions>) -> RequestOptions {
        let left = self
            .deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        let cut = |d: Option<Duration>| Some(d.map_or(left, |d| d.min(left)));
        let o = options.unwrap_or_default();
        RequestOptions {
            connect_timeout: cut(o.connect_timeout),
            first_byte_timeout: cut(o.first_byte_timeout),
            between_bytes_timeout: cut(o.between_bytes_timeout),
        }
    }

    /// What the body meters need: the tally, the deadline and who to blame.
    fn cutoff(&self) -> super::body::Cutoff {
        super::body::Cutoff {
            tally: self.tally.clone(),
            scope: self.scope.clone(),
            deadline: self.deadline,
            call_deadline: self.call_deadline,
            what: self.what.clone(),
        }
    }

    fn timed_out(&self) {
        note_timeout(&self.tally, self.call_deadline, &self.what);
    }

    /// Counts and logs the request's end: the plugin's log line with method,
    /// host and status.
    fn answered(&self, status: Option<u16>, latency: Duration, error: Option<&str>) {
        let scope = &self.scope;
        scope
            .outbound
            .metrics
            .answered(&scope.name, &self.host, status, latency);
        let event_id = self.tally.with(|t| t.event_id.clone());
        let elapsed_ms = latency.as_millis() as u64;
        match (status, error) {
            (Some(status), _) => tracing::info!(
                target: "evhost::plugin",
                plugin = %scope.name, version = %scope.version, event_id,
                method = %self.method, host = %self.host, path = %self.target.path,
                status, elapsed_ms, "outbound request"
            ),
            (None, error) => tracing::warn!(
                target: "evhost::plugin",
                plugin = %scope.name, version = %scope.version, event_id,
                method = %self.method, host = %self.host, path = %self.target.path,
                status = "none", elapsed_ms, error = error.unwrap_or(""),
                "outbound request failed"
            ),
        }
    }
}

/// How close to the deadline a timeout error counts as the deadline's.
const DEADLINE_SLACK: Duration = Duration::from_millis(20);

fn is_timeout(e: &Error) -> bool {
    matches!(
        e,
        Error::ConnectionTimeout
            | Error::ConnectionReadTimeout
            | Error::HttpResponseTimeout
            | Error::DnsTimeout
    )
}

/// Records that `what` ran into its deadline; when that is the call's own,
/// the call ends as a timeout naming it.
pub(super) fn note_timeout(tally: &Tally, call_deadline: bool, what: &str) {
    if call_deadline {
        tally.with(|t| {
            if t.timed_out.is_none() {
                t.timed_out = Some(what.to_owned());
            }
        });
    }
}

/// Whether `addr` reaches the daemon listening on `daemon`: the same
/// address, or any local one when it listens on all interfaces.
fn is_daemon(addr: &SocketAddr, daemon: &SocketAddr) -> bool {
    addr.port() == daemon.port()
        && (addr.ip() == daemon.ip()
            || daemon.ip().is_unspecified()
            || addr.ip().is_unspecified()
            || (addr.ip().is_loopback() && daemon.ip().is_loopback()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daemon_is_reached_on_its_address_or_any_when_it_listens_on_all() {
        let d: SocketAddr = "127.0.0.1:7070".parse().unwrap();
        assert!(is_daemon(&"127.0.0.1:7070".parse().unwrap(), &d));
        assert!(is_daemon(&"[::1]:7070".parse().unwrap(), &d));
        assert!(!is_daemon(&"127.0.0.1:7071".parse().unwrap(), &d));
        let all: SocketAddr = "0.0.0.0:7070".parse().unwrap();
        assert!(is_daemon(&"10.1.2.3:7070".parse().unwrap(), &all));
    }
}
