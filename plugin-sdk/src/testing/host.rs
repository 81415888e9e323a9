use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{TEST_TIME, next_test_id};
use crate::host::Host;
use crate::{
    Context, Event, HandlerError, HttpError, HttpRequest, HttpResponse, Level, OutgoingEvent,
    RetryPolicy, topic_for_type,
};

/// An in-memory stand-in for the daemon, for one plugin.
///
/// Configure it with [`with_config`](Self::with_config) and
/// [`with_state`](Self::with_state), call handlers with
/// [`deliver`](Self::deliver), then inspect [`emitted`](Self::emitted),
/// [`state_json`](Self::state_json) and [`logs`](Self::logs).
///
/// ```
/// use evhost_sdk::prelude::*;
/// use evhost_sdk::testing::{TestEvent, TestHost};
///
/// let mut host = TestHost::new().with_config("limit", "2");
/// let result = host.deliver(|_, cx| {
///     cx.state_set("written", &true)?;
///     Err(HandlerError::retry("not yet"))
/// }, TestEvent::new("job.queued"));
/// assert!(result.unwrap_err().is_retry());
/// assert_eq!(host.state_json::<bool>("written"), None); // nothing committed
/// ```
#[derive(Debug, Clone)]
pub struct TestHost {
    plugin_name: String,
    config: BTreeMap<String, String>,
    state: BTreeMap<String, Vec<u8>>,
    emitted: Vec<Event>,
    logs: Vec<LogLine>,
    /// Next offset per topic of committed emits.
    offsets: BTreeMap<String, u64>,
    /// Answers [`Context::http`]; `None` refuses every request.
    http: Option<Responder>,
    /// Every request sent, in order, failed calls included (it was sent).
    http_sent: Vec<HttpRequest>,
    /// Set by [`with_sidecar`](Self::with_sidecar): the operator's grants,
    /// enforced as the daemon enforces them. `None` grants everything.
    #[cfg(not(target_family = "wasm"))]
    grants: Option<SidecarGrants>,
}

/// The grants of a sidecar file and where they were read from.
#[cfg(not(target_family = "wasm"))]
#[derive(Debug, Clone)]
struct SidecarGrants {
    emit: crate::sidecar::EmitGrant,
    state: bool,
    file: std::path::PathBuf,
}

/// What answers one request in a test.
type Respond = dyn Fn(&HttpRequest) -> Result<HttpResponse, HttpError> + Send + Sync;

/// The function that answers a test's HTTP requests.
#[derive(Clone)]
#[cfg_attr(target_family = "wasm", allow(dead_code))]
struct Responder(std::sync::Arc<Respond>);

impl fmt::Debug for Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Responder")
    }
}

/// The outcome of [`TestHost::deliver_with_retries`].
///
/// ```
/// use evhost_sdk::RetryPolicy;
/// use evhost_sdk::testing::{TestEvent, TestHost};
///
/// let mut host = TestHost::new();
/// let run = host.deliver_with_retries(|_, _| Ok(()), TestEvent::new("a.b"), &RetryPolicy::default());
/// assert_eq!(run.attempts, 1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// How many calls were made.
    pub attempts: u32,
    /// The last call's result.
    pub result: Result<(), HandlerError>,
}

/// One line a handler logged through [`Context::log`] and friends.
///
/// ```
/// use evhost_sdk::Level;
/// use evhost_sdk::testing::{TestEvent, TestHost};
///
/// let mut host = TestHost::new();
/// host.deliver(|_, cx| { cx.info("hi"); Ok(()) }, TestEvent::new("a.b")).unwrap();
/// let line = &host.logs()[0];
/// assert_eq!((line.level, line.message.as_str()), (Level::Info, "hi"));
/// assert_eq!(line.to_string(), "[info] hi");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Severity.
    pub level: Level,
    /// The message.
    pub message: String,
    /// Structured fields, in the order given.
    pub fields: Vec<(String, String)>,
}

impl fmt::Display for LogLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.level, self.message)?;
        for (key, value) in &self.fields {
            write!(f, " {key}={value}")?;
        }
        Ok(())
    }
}

impl Default for TestHost {
    fn default() -> Self {
        Self::new()
    }
}

impl TestHost {
    /// An empty host for a plugin named `test-plugin`.
    ///
    /// ```
    /// let host = evhost_sdk::testing::TestHost::new();
    /// assert!(host.emitted().is_empty());
    /// ```
    pub fn new() -> Self {
        Self {
            plugin_name: "test-plugin".to_owned(),
            config: BTreeMap::new(),
            state: BTreeMap::new(),
            emitted: Vec::new(),
            logs: Vec::new(),
            offsets: BTreeMap::new(),
            http: None,
            http_sent: Vec::new(),
            #[cfg(not(target_family = "wasm"))]
            grants: None,
        }
    }

    /// Takes the operator's sidecar file at `path`: its `[config]` values
    /// (those not set by [`with_config`](Self::with_config) already) and its
    /// `[grants]`, enforced as the daemon does: an emit of a type the sidecar does not grant, or a
    /// `state` access without `state = true`, fails the call with the
    /// daemon's message (a *reject*; nothing is committed), whatever the
    /// handler makes of the error. Without a sidecar, `TestHost` grants
    /// everything. The plugin name becomes the file's stem (`NAME.toml`)
    /// unless [`with_plugin_name`](Self::with_plugin_name) set one.
    ///
    /// # Panics
    /// If the file cannot be read or its `[grants]` are invalid — a test failure.
    ///
    /// ```
    /// use evhost_sdk::prelude::*;
    /// use evhost_sdk::testing::{TestEvent, TestHost};
    ///
    /// let dir = std::env::temp_dir().join(format!("evhost-sdk-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let sidecar = dir.join("audit.toml");
    /// std::fs::write(&sidecar, "[grants]\nemit = [\"audit.*\"]\n").unwrap();
    ///
    /// let mut host = TestHost::new().with_sidecar(&sidecar);
    /// host.deliver(|_, cx| Ok(cx.emit(OutgoingEvent::new("audit.recorded")).map(drop)?), TestEvent::new("a.b"))
    ///     .unwrap();
    /// let refused = host
    ///     .deliver(|_, cx| { cx.state_set("seen", &true)?; Ok(()) }, TestEvent::new("a.b"))
    ///     .unwrap_err();
    /// assert!(refused.message().starts_with("plugin `audit` has no `state` grant"));
    /// ```
    #[cfg(not(target_family = "wasm"))]
    pub fn with_sidecar(mut self, path: impl AsRef<std::path::Path>) -> Self {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
            panic!(
                "TestHost::with_sidecar: cannot read {}: {e}",
                path.display()
            )
        });
        let spec = crate::sidecar::sidecar_grants(&text)
            .unwrap_or_else(|e| panic!("TestHost::with_sidecar: {}: {e}", path.display()));
        // The operator's config as the plugin would read it; `with_config` wins.
        let config = crate::sidecar::sidecar_config(&text)
            .unwrap_or_else(|e| panic!("TestHost::with_sidecar: {}: {e}", path.display()));
        for (key, value) in config {
            self.config.entry(key).or_insert(value);
        }
        let emit = crate::sidecar::EmitGrant::new(spec.emit)
            .unwrap_or_else(|e| panic!("TestHost::with_sidecar: {}: {e}", path.display()));
        if self.plugin_name == "test-plugin"
            && let Some(stem) = path.file_stem()
        {
            self.plugin_name = stem.to_string_lossy().into_owned();
        }
        self.grants = Some(SidecarGrants {
            emit,
            state: spec.state,
            file: path.to_owned(),
        });
        self
    }

    /// Answers the handler's [`Context::http`] requests with `respond`, as
    /// a granted server would; without it every request is refused, as the
    /// daemon does without an `http` grant.
    ///
    /// ```
    /// use evhost_sdk::{HttpRequest, HttpResponse};
    /// use evhost_sdk::testing::{TestEvent, TestHost};
    ///
    /// let mut host = TestHost::new().with_http(|req| Ok(HttpResponse::new(if req.method == "GET" { 200 } else { 405 })));
    /// host.deliver(|e, cx| {
    ///     assert_eq!(cx.http(e, HttpRequest::get("http://h/"))?.status, 200);
    ///     Ok(())
    /// }, TestEvent::new("a.b")).unwrap();
    ///
    /// let mut bare = TestHost::new();
    /// let err = bare.deliver(|e, cx| { cx.http(e, HttpRequest::get("http://h/"))?; Ok(()) }, TestEvent::new("a.b"));
    /// assert!(err.unwrap_err().is_reject());
    /// ```
    pub fn with_http<F>(mut self, respond: F) -> Self
    where
        F: Fn(&HttpRequest) -> Result<HttpResponse, HttpError> + Send + Sync + 'static,
    {
        self.http = Some(Responder(std::sync::Arc::new(respond)));
        self
    }

    /// Every HTTP request the handler sent, oldest first, with the headers
    /// the SDK added (`Idempotency-Key`).
    ///
    /// ```
    /// use evhost_sdk::{HttpRequest, HttpResponse};
    /// use evhost_sdk::testing::{TestEvent, TestHost};
    ///
    /// let mut host = TestHost::new().with_http(|_| Ok(HttpResponse::new(204)));
    /// host.deliver(|e, cx| { cx.http(e, HttpRequest::post("http://h/x"))?; Ok(()) }, TestEvent::new("a.b")).unwrap();
    /// assert_eq!(host.http_requests()[0].url, "http://h/x");
    /// ```
    pub fn http_requests(&self) -> &[HttpRequest] {
        &self.http_sent
    }

    /// Names the plugin; emitted events get `source` `evhost://plugin/NAME`.
    ///
    /// ```
    /// use evhost_sdk::prelude::*;
    /// use evhost_sdk::testing::{TestEvent, TestHost};
    ///
    /// let mut host = TestHost::new().with_plugin_name("welcome");
    /// host.deliver(|_, cx| Ok(cx.emit(OutgoingEvent::new("a.b")).map(drop)?), TestEvent::new("x.y")).unwrap();
    /// assert_eq!(host.emitted()[0].source, "evhost://plugin/welcome");
    /// ```
    pub fn with_plugin_name(mut self, name: impl Into<String>) -> Self {
        self.plugin_name = name.into();
        self
    }

    /// Adds an operator setting, as the sidecar's `[config]` would.
    ///
    /// ```
    /// let host = evhost_sdk::testing::TestHost::new().with_config("greeting", "Hi");
    /// # let _ = host;
    /// ```
    pub fn with_config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.insert(key.into(), value.into());
        self
    }

    /// Seeds committed state with `value` as JSON.
    ///
    /// # Panics
    /// If `value` does not serialize to JSON.
    ///
    /// ```
    /// let host = evhost_sdk::testing::TestHost::new().with_state("count/total", &41);
    /// assert_eq!(host.state_json::<u64>("count/total"), Some(41));
    /// ```
    pub fn with_state<T: Serialize + ?Sized>(self, key: impl Into<String>, value: &T) -> Self {
        let bytes = serde_json::to_vec(value).expect("TestHost::with_state: value must serialize");
        self.with_state_bytes(key, bytes)
    }

    /// Seeds committed state with raw bytes.
    ///
    /// ```
    /// let host = evhost_sdk::testing::TestHost::new().with_state_bytes("raw", vec![1]);
    /// assert_eq!(host.state_bytes("raw"), Some(&[1u8][..]));
    /// ```
    pub fn with_state_bytes(mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.state.insert(key.into(), value.into());
        self
    }

    /// Calls `handler` with `event` as the daemon would: on `Ok` the call's
    /// emits and state writes are committed, on `Err` they are discarded (log
    /// lines are kept either way). Returns the handler's result.
    ///
    /// A panicking handler panics the test; in the daemon it traps and, like
    /// an error, commits nothing.
    ///
    /// ```
    /// use evhost_sdk::prelude::*;
    /// use evhost_sdk::testing::{TestEvent, TestHost};
    ///
    /// fn handle(_: &Event, cx: &mut Context) -> Result<(), HandlerError> {
    ///     cx.emit(OutgoingEvent::new("a.done"))?;
    ///     Err(HandlerError::reject("changed my mind"))
    /// }
    ///
    /// let mut host = TestHost::new();
    /// assert!(host.deliver(handle, TestEvent::new("a.started")).unwrap_err().is_reject());
    /// assert!(host.emitted().is_empty());
    /// ```
    pub fn deliver<F>(&mut self, handler: F, event: impl Into<Event>) -> Result<(), HandlerError>
    where
        F: FnOnce(&Event, &mut Context<'_>) -> Result<(), HandlerError>,
    {
        let event = event.into();
        let mut call = CallHost {
            handled: &event,
            plugin_name: &self.plugin_name,
            config: &self.config,
            state: &self.state,
            logs: &mut self.logs,
            writes: BTreeMap::new(),
            emits: Vec::new(),
            #[cfg(not(target_family = "wasm"))]
            grants: self.grants.as_ref(),
            refused: None,
            http: self.http.as_ref(),
            http_sent: &mut self.http_sent,
        };
        let result = handler(&event, &mut Context::new(&mut call));
        let CallHost {
            writes,
            emits,
            refused,
            ..
        } = call;
        // As in the daemon: a refused grant fails the call whatever the
        // handler made of the error, keeping its words when it passed it on.
        let result = match (refused, result) {
            (None, result) => result,
            (Some(refusal), Err(e)) if e.is_reject() && e.message().contains(&refusal) => Err(e),
            (Some(refusal), _) => Err(HandlerError::reject(refusal)),
        };
        if result.is_ok() {
            for (key, value) in writes {
                match value {
                    Some(value) => self.state.insert(key, value),
                    None => self.state.remove(&key),
                };
            }
            for mut emitted in emits {
                let next = self.offsets.entry(emitted.topic.clone()).or_insert(0);
                emitted.offset = *next;
                *next += 1;
                self.emitted.push(emitted);
            }
        }
        result
    }

    /// Delivers `event` as the daemon does under `policy`: attempt 1, then
    /// again with `attempt` increased while the handler returns a *retry* and
    /// attempts remain. Success, a *reject* or the last attempt ends it. Each
    /// attempt commits or discards on its own, as in [`deliver`](Self::deliver);
    /// backoff delays are not waited.
    ///
    /// ```
    /// use evhost_sdk::prelude::*;
    /// use evhost_sdk::testing::{TestEvent, TestHost};
    ///
    /// fn flaky(event: &Event, _: &mut Context) -> Result<(), HandlerError> {
    ///     if event.attempt < 3 { Err(HandlerError::retry("warming up")) } else { Ok(()) }
    /// }
    ///
    /// let mut host = TestHost::new();
    /// let run = host.deliver_with_retries(flaky, TestEvent::new("a.b"), &RetryPolicy::attempts(5));
    /// assert_eq!((run.attempts, run.result.is_ok()), (3, true));
    ///
    /// let run = host.deliver_with_retries(flaky, TestEvent::new("a.b"), &RetryPolicy::attempts(2));
    /// assert_eq!(run.attempts, 2);
    /// assert!(run.result.unwrap_err().is_retry()); // the daemon would dead-letter it now
    /// ```
    pub fn deliver_with_retries<F>(
        &mut self,
        mut handler: F,
        event: impl Into<Event>,
        policy: &RetryPolicy,
    ) -> Delivery
    where
        F: FnMut(&Event, &mut Context<'_>) -> Result<(), HandlerError>,
    {
        let mut event = event.into();
        let first = event.attempt.max(1);
        let last = first.saturating_add(policy.max_attempts.max(1) - 1);
        loop {
            let result = self.deliver(&mut handler, &event);
            let attempts = event.attempt.max(1) - first + 1;
            match result {
                Err(err) if err.is_retry() && event.attempt < last => {
                    event.attempt += 1;
                }
                result => return Delivery { attempts, result },
            }
        }
    }

    /// Every event committed by successful calls so far, in emit order, with
    /// the host's defaults filled in.
    ///
    /// ```
    /// let host = evhost_sdk::testing::TestHost::new();
    /// assert!(host.emitted().is_empty());
    /// ```
    pub fn emitted(&self) -> &[Event] {
        &self.emitted
    }

    /// Takes the committed events out, leaving none; handy between steps.
    ///
    /// ```
    /// let mut host = evhost_sdk::testing::TestHost::new();
    /// assert!(host.take_emitted().is_empty());
    /// ```
    pub fn take_emitted(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.emitted)
    }

    /// The committed JSON value under `key`, if any.
    ///
    /// # Panics
    /// If the stored bytes do not decode as `T` — a test failure.
    ///
    /// ```
    /// let host = evhost_sdk::testing::TestHost::new().with_state("k", &"v");
    /// assert_eq!(host.state_json::<String>("k").as_deref(), Some("v"));
    /// ```
    pub fn state_json<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        let bytes = self.state.get(key)?;
        match serde_json::from_slice(bytes) {
            Ok(value) => Some(value),
            Err(err) => panic!(
                "state key `{key}` does not decode as {}: {err}; stored: {}",
                std::any::type_name::<T>(),
                String::from_utf8_lossy(bytes)
            ),
        }
    }

    /// The committed bytes under `key`, if any.
    ///
    /// ```
    /// let host = evhost_sdk::testing::TestHost::new().with_state_bytes("k", b"v".to_vec());
    /// assert_eq!(host.state_bytes("k"), Some(&b"v"[..]));
    /// ```
    pub fn state_bytes(&self, key: &str) -> Option<&[u8]> {
        self.state.get(key).map(Vec::as_slice)
    }

    /// All committed keys in ascending order, the SDK's reserved ones included.
    ///
    /// ```
    /// let host = evhost_sdk::testing::TestHost::new().with_state("b", &1).with_state("a", &2);
    /// assert_eq!(host.state_keys(), vec!["a", "b"]);
    /// ```
    pub fn state_keys(&self) -> Vec<&str> {
        self.state.keys().map(String::as_str).collect()
    }

    /// Every line logged so far, by successful and failed calls alike.
    ///
    /// ```
    /// let host = evhost_sdk::testing::TestHost::new();
    /// assert!(host.logs().is_empty());
    /// ```
    pub fn logs(&self) -> &[LogLine] {
        &self.logs
    }
}

/// The host side of one call: committed state plus this call's buffered
/// writes (`None` = deleted) and emits.
struct CallHost<'a> {
    handled: &'a Event,
    plugin_name: &'a str,
    config: &'a BTreeMap<String, String>,
    state: &'a BTreeMap<String, Vec<u8>>,
    logs: &'a mut Vec<LogLine>,
    writes: BTreeMap<String, Option<Vec<u8>>>,
    emits: Vec<Event>,
    #[cfg(not(target_family = "wasm"))]
    grants: Option<&'a SidecarGrants>,
    /// The first refused grant of the call.
    refused: Option<String>,
    // Read by `Host::http`, which a component does not have.
    #[cfg_attr(target_family = "wasm", allow(dead_code))]
    http: Option<&'a Responder>,
    #[cfg_attr(target_family = "wasm", allow(dead_code))]
    http_sent: &'a mut Vec<HttpRequest>,
}

impl CallHost<'_> {
    #[cfg(not(target_family = "wasm"))]
    fn refuse(&mut self, message: String) -> String {
        self.refused.get_or_insert_with(|| message.clone());
        message
    }

    #[cfg(not(target_family = "wasm"))]
    fn check_emit(&mut self, ty: &str) -> Result<(), String> {
        match self.grants {
            Some(g) if !g.emit.allows(ty) => {
                let how = format!("{} in {}", crate::sidecar::emit_edit(ty), g.file.display());
                let message = g.emit.refusal(self.plugin_name, ty, &how);
                Err(self.refuse(message))
            }
            _ => Ok(()),
        }
    }

    #[cfg(not(target_family = "wasm"))]
    fn check_state(&mut self) -> Result<(), String> {
        match self.grants {
            Some(g) if !g.state => {
                let how = format!("{} in {}", crate::sidecar::STATE_EDIT, g.file.display());
                let message = crate::sidecar::state_refusal(self.plugin_name, &how);
                Err(self.refuse(message))
            }
            _ => Ok(()),
        }
    }

    #[cfg(target_family = "wasm")]
    fn check_emit(&mut self, _ty: &str) -> Result<(), String> {
        Ok(())
    }

    #[cfg(target_family = "wasm")]
    fn check_state(&mut self) -> Result<(), String> {
        Ok(())
    }
}

impl Host for CallHost<'_> {
    fn emit(&mut self, out: OutgoingEvent) -> Result<String, String> {
        if out.ty.is_empty() {
            return Err("event type must not be empty".to_owned());
        }
        self.check_emit(&out.ty)?;
        let id = out.id.unwrap_or_else(next_test_id);
        let datacontenttype = match (&out.datacontenttype, &out.data) {
            (None, Some(_)) => Some("application/json".to_owned()),
            (ct, _) => ct.clone(),
        };
        self.emits.push(Event {
            id: id.clone(),
            source: format!("evhost://plugin/{}", self.plugin_name),
            specversion: "1.0".to_owned(),
            topic: out.topic.unwrap_or_else(|| topic_for_type(&out.ty)),
            ty: out.ty,
            subject: out.subject,
            time: TEST_TIME.to_owned(),
            datacontenttype,
            dataschema: out.dataschema,
            data: out.data,
            correlationid: self.handled.correlationid.clone(),
            causationid: Some(self.handled.id.clone()),
            actor: out.actor.or_else(|| self.handled.actor.clone()),
            extensions: out.extensions,
            partition: 0,
            offset: 0, // assigned on commit
            stream: None,
            streamversion: None,
            attempt: 1,
        });
        Ok(id)
    }

    fn state_get(&mut self, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.check_state()?;
        Ok(match self.writes.get(key) {
            Some(written) => written.clone(),
            None => self.state.get(key).cloned(),
        })
    }

    fn state_set(&mut self, key: &str, value: &[u8]) -> Result<(), String> {
        self.check_state()?;
        self.writes.insert(key.to_owned(), Some(value.to_vec()));
        Ok(())
    }

    fn state_delete(&mut self, key: &str) -> Result<(), String> {
        self.check_state()?;
        self.writes.insert(key.to_owned(), None);
        Ok(())
    }

    fn state_keys(&mut self, prefix: &str) -> Result<Vec<String>, String> {
        self.check_state()?;
        let mut keys: Vec<String> = self
            .state
            .keys()
            .filter(|key| key.starts_with(prefix) && !self.writes.contains_key(*key))
            .cloned()
            .collect();
        keys.extend(
            self.writes
                .iter()
                .filter(|(key, value)| key.starts_with(prefix) && value.is_some())
                .map(|(key, _)| key.clone()),
        );
        keys.sort();
        Ok(keys)
    }

    fn log(&mut self, level: Level, message: &str, fields: &[(&str, &str)]) {
        let line = LogLine {
            level,
            message: message.to_owned(),
            fields: fields
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect(),
        };
        // Shown by the test runner for failing tests, like the daemon's log.
        eprintln!("{}: {line}", self.plugin_name);
        self.logs.push(line);
    }

    fn config(&mut self, key: &str) -> Option<String> {
        self.config.get(key).cloned()
    }

    fn config_entries(&mut self) -> Vec<(String, String)> {
        self.config
            .iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect()
    }

    #[cfg(not(target_family = "wasm"))]
    fn http(&mut self, request: &HttpRequest) -> Result<HttpResponse, HttpError> {
        let Some(respond) = self.http else {
            return Err(HttpError::refused(format!(
                "plugin `{}` may not request {} {}: it has no `http` grant \
                 (TestHost::with_http answers requests)",
                self.plugin_name, request.method, request.url
            )));
        };
        self.http_sent.push(request.clone());
        (respond.0)(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestEvent;

    #[test]
    fn reads_inside_a_call_see_its_own_writes_and_deletes() {
        let mut host = TestHost::new().with_state("a", &1).with_state("b", &2);
        host.deliver(
            |_, cx| {
                cx.state_set("a", &10)?;
                cx.state_delete("b")?;
                cx.state_set("c", &3)?;
                assert_eq!(cx.state_get::<i32>("a")?, Some(10));
                assert_eq!(cx.state_get::<i32>("b")?, None);
                assert_eq!(cx.state_keys("")?, vec!["a", "c"]);
                Ok(())
            },
            TestEvent::new("x.y"),
        )
        .unwrap();
        assert_eq!(host.state_keys(), vec!["a", "c"]);
        assert_eq!(host.state_json::<i32>("a"), Some(10));
    }

    #[test]
    fn a_failed_call_commits_neither_emits_nor_writes_but_keeps_logs() {
        let mut host = TestHost::new().with_state("a", &1);
        let result = host.deliver(
            |_, cx| {
                cx.state_set("a", &2)?;
                cx.state_delete("a")?;
                cx.emit(OutgoingEvent::new("x.done"))?;
                cx.warn("giving up");
                Err(HandlerError::reject("no"))
            },
            TestEvent::new("x.y"),
        );
        assert!(result.unwrap_err().is_reject());
        assert_eq!(host.state_json::<i32>("a"), Some(1));
        assert!(host.emitted().is_empty());
        assert_eq!(host.logs().len(), 1);
    }

    #[test]
    fn emitted_events_get_the_host_defaults() {
        let mut host = TestHost::new().with_plugin_name("p");
        let handled = TestEvent::new("order.placed")
            .correlationid("flow-1")
            .actor("ada")
            .build();
        let mut ids = Vec::new();
        host.deliver(
            |_, cx| {
                ids.push(cx.emit(OutgoingEvent::new("invoice.requested").json(&1)?)?);
                ids.push(
                    cx.emit(
                        OutgoingEvent::new("invoice.requested")
                            .id("fixed")
                            .topic("t"),
                    )?,
                );
                Ok(())
            },
            &handled,
        )
        .unwrap();
        let [first, second] = host.emitted() else {
            panic!("two events expected")
        };
        assert_eq!(first.id, ids[0]);
        assert_eq!(second.id, "fixed");
        assert_eq!(first.topic, "invoice-events");
        assert_eq!(second.topic, "t");
        for event in [first, second] {
            assert_eq!(event.source, "evhost://plugin/p");
            assert_eq!(event.correlationid, "flow-1");
            assert_eq!(event.causationid.as_deref(), Some(handled.id.as_str()));
            assert_eq!(event.actor.as_deref(), Some("ada"));
        }
        assert_eq!(first.datacontenttype.as_deref(), Some("application/json"));
    }

    #[test]
    fn an_empty_event_type_is_refused_and_rejects_the_call() {
        let mut host = TestHost::new();
        let result = host.deliver(
            |_, cx| Ok(cx.emit(OutgoingEvent::new("")).map(drop)?),
            TestEvent::new("x.y"),
        );
        assert!(result.unwrap_err().is_reject());
    }

    fn sidecar(text: &str) -> (std::path::PathBuf, impl Drop) {
        struct Cleanup(std::path::PathBuf);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("evhost-sdk-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ledger.toml");
        std::fs::write(&path, text).unwrap();
        (path, Cleanup(dir))
    }

    #[test]
    fn a_sidecar_refuses_an_ungranted_emit_with_the_daemons_words_and_commits_nothing() {
        let (path, _cleanup) = sidecar(
            "timeout = \"1s\"\n[grants]\nemit = [\"ledger.*\"]\n[config]\ncurrency = \"EUR\"\nlimit = 3\n",
        );
        let mut host = TestHost::new()
            .with_config("limit", "5")
            .with_sidecar(&path);
        host.deliver(
            |_, cx| {
                assert_eq!(cx.config("currency").as_deref(), Some("EUR"));
                assert_eq!(cx.config("limit").as_deref(), Some("5"));
                Ok(())
            },
            TestEvent::new("x.y"),
        )
        .unwrap();
        // The handler swallows the error: the call still fails, as in the daemon.
        let err = host
            .deliver(
                |_, cx| {
                    cx.emit(OutgoingEvent::new("ledger.booked"))?;
                    let _ignored = cx.emit(OutgoingEvent::new("audit.recorded"));
                    Ok(())
                },
                TestEvent::new("x.y"),
            )
            .unwrap_err();
        assert!(err.is_reject());
        assert_eq!(
            err.message(),
            format!(
                "plugin `ledger` may not emit type `audit.recorded`: its `emit` grant allows ledger.*; \
                 add \"audit.recorded\" (or a pattern matching it) to emit under [grants] in {}",
                path.display()
            )
        );
        assert!(host.emitted().is_empty());
        host.deliver(
            |_, cx| Ok(cx.emit(OutgoingEvent::new("ledger.booked")).map(drop)?),
            TestEvent::new("x.y"),
        )
        .unwrap();
        assert_eq!(host.emitted().len(), 1);
    }

    #[test]
    fn a_sidecar_without_the_state_grant_refuses_state() {
        let (path, _cleanup) = sidecar("[grants]\nemit = []\n");
        let mut host = TestHost::new().with_plugin_name("p").with_sidecar(&path);
        let err = host
            .deliver(
                |_, cx| Ok(cx.state_get::<u32>("n").map(drop)?),
                TestEvent::new("x.y"),
            )
            .unwrap_err();
        assert!(
            err.message().contains("plugin `p` has no `state` grant"),
            "{err:?}"
        );
        let (granted, _cleanup) = sidecar("[grants]\nstate = true\n");
        let mut host = TestHost::new().with_sidecar(&granted);
        host.deliver(|_, cx| Ok(cx.state_set("n", &1)?), TestEvent::new("x.y"))
            .unwrap();
        assert_eq!(host.state_json::<u32>("n"), Some(1));
    }
}
