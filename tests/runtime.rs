//! The plugin boundary end to end: real components built from `plugins/`,
//! loaded and called through evhost's runtime.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use evhost::event::{self, Event, Position, StoredEvent};
use evhost::runtime::{
    Failure, GrantSource, Grants, InstanceSettings, LimitHit, Limits, LoadError, MAX_OUTPUT_BYTES,
    MAX_OUTPUT_LINES, MemoryState, Origin, PoolConfig, Runtime, RuntimeConfig,
};

fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig::default()).expect("runtime starts")
}

fn event(ty: &str, data: Option<serde_json::Value>) -> Arc<StoredEvent> {
    let id = event::new_event_id();
    Arc::new(StoredEvent {
        position: Position {
            topic: event::topic_for_type(ty),
            partition: 0,
            offset: 7,
        },
        event: Event {
            id: id.clone(),
            source: "test".into(),
            specversion: "1.0".into(),
            ty: ty.into(),
            subject: Some("key-1".into()),
            time: event::now_rfc3339(),
            datacontenttype: data.as_ref().map(|_| "application/json".into()),
            dataschema: None,
            data: data.map(|d| d.to_string().into_bytes()),
            correlationid: format!("corr-{id}"),
            causationid: None,
            actor: Some("tester".into()),
            extensions: BTreeMap::new(),
            stream: None,
            streamversion: None,
        },
    })
}

fn granted() -> InstanceSettings {
    InstanceSettings {
        grants: Grants::all(),
        ..Default::default()
    }
}

#[test]
fn sdk_plugin_returns_its_emits_with_causation_and_correlation() {
    let rt = runtime();
    let plugin = rt.load_file(&support::plugin("welcome")).unwrap();
    assert_eq!(plugin.info.name, "welcome");
    let mut settings = granted();
    settings.config.insert("greeting".into(), "Hello".into());
    let mut instance = rt.instance(plugin, settings);
    let ev = event(
        "user.created",
        Some(serde_json::json!({"email": "ada@example.com", "name": "Ada"})),
    );

    let effects = instance.call(&ev, 1).expect("handled");

    assert_eq!(effects.emits.len(), 1, "{effects:?}");
    let out = &effects.emits[0];
    assert_eq!(out.event.causationid.as_deref(), Some(ev.event.id.as_str()));
    assert_eq!(out.event.correlationid, ev.event.correlationid);
    assert_eq!(out.event.source, "evhost://plugin/welcome");
    let data: serde_json::Value =
        serde_json::from_slice(out.event.data.as_deref().unwrap()).unwrap();
    assert!(data.to_string().contains("ada@example.com"), "{data}");
    assert!(
        data.to_string().contains("Hello"),
        "config value not used: {data}"
    );
}

#[test]
fn sdk_plugin_returns_state_writes_and_reads_committed_state() {
    let rt = runtime();
    let plugin = rt.load_file(&support::plugin("counter")).unwrap();
    let state = Arc::new(MemoryState::default());
    let settings = InstanceSettings {
        state: state.clone(),
        ..granted()
    };
    let mut instance = rt.instance(plugin, settings);

    let first = instance
        .call(&event("order.created", None), 1)
        .expect("handled");
    assert!(!first.state.is_empty(), "counter wrote no state");
    assert_eq!(
        first.state.get("count/total"),
        Some(&Some(b"1".to_vec())),
        "{:?}",
        first.state
    );
    // Commit as the dispatcher would; the next call must build on it.
    state.apply("counter", &first.state);
    let second = instance
        .call(&event("order.created", None), 1)
        .expect("handled");
    assert_eq!(second.state.get("count/total"), Some(&Some(b"2".to_vec())));
}

#[test]
fn uncommitted_effects_of_a_call_are_not_seen_by_the_next() {
    // The runtime buffers writes per call; without a commit the next call
    // starts again from committed state.
    let rt = runtime();
    let plugin = rt.load_file(&support::plugin("counter")).unwrap();
    let mut instance = rt.instance(plugin, granted());
    let a = instance.call(&event("x.y", None), 1).unwrap();
    let b = instance.call(&event("x.y", None), 1).unwrap();
    assert_eq!(a.state.get("count/total"), b.state.get("count/total"));
}

#[test]
fn emit_and_state_without_grants_are_refused_at_call_time() {
    let rt = runtime();
    let welcome = rt.load_file(&support::plugin("welcome")).unwrap();
    let mut instance = rt.instance(welcome.clone(), InstanceSettings::default());
    let ev = event("user.created", Some(serde_json::json!({"email": "a@b.c"})));
    let err = instance
        .call(&ev, 1)
        .expect_err("emit without grant must fail");
    assert!(err.to_string().contains("no `emit` grant"), "{err}");

    let narrow = InstanceSettings {
        grants: Grants::new(vec!["audit.*".into()], false).unwrap(),
        ..Default::default()
    };
    let mut instance = rt.instance(welcome, narrow);
    let err = instance
        .call(&ev, 1)
        .expect_err("emit outside the pattern must fail");
    assert!(err.to_string().contains("audit.*"), "{err}");

    let counter = rt.load_file(&support::plugin("counter")).unwrap();
    let mut instance = rt.instance(counter, InstanceSettings::default());
    let err = instance
        .call(&event("a.b", None), 1)
        .expect_err("state without grant must fail");
    assert!(err.to_string().contains("no `state` grant"), "{err}");
}

/// Grants as the loader builds them from `NAME.toml` (which need not exist).
fn sidecar_grants(emit: &[&str], state: bool, sidecar: &str) -> InstanceSettings {
    InstanceSettings {
        grants: Grants::new(emit.iter().map(|p| p.to_string()).collect(), state)
            .unwrap()
            .from_source(GrantSource::Sidecar(PathBuf::from(sidecar))),
        ..Default::default()
    }
}

#[test]
fn a_refused_grant_is_a_rejection_naming_the_sidecar_and_the_key() {
    let rt = runtime();
    // `counter` turns a state error into a retry (the SDK's `?`): it can never
    // succeed, so the host rejects instead.
    let counter = rt.load_file(&support::plugin("counter")).unwrap();
    let mut instance = rt.instance(
        counter,
        sidecar_grants(&[], false, "/srv/plugins/counter.toml"),
    );
    let err = instance.call(&event("a.b", None), 1).unwrap_err();
    match &err.failure {
        Failure::Refused(m) => assert!(
            m.contains("no `state` grant")
                && m.contains(r#"add "state = true" under [grants] in /srv/plugins/counter.toml"#),
            "{m}"
        ),
        other => panic!("expected a refusal (a rejection the breaker counts), got {other:?}"),
    }

    let welcome = rt.load_file(&support::plugin("welcome")).unwrap();
    let mut instance = rt.instance(
        welcome,
        sidecar_grants(&["audit.*"], false, "/srv/plugins/welcome.toml"),
    );
    let ev = event("user.created", Some(serde_json::json!({"email": "a@b.c"})));
    let err = instance.call(&ev, 1).unwrap_err();
    match &err.failure {
        Failure::Refused(m) => assert!(
            m.contains("may not emit type `notification.requested`")
                && m.contains("audit.*")
                && m.contains(
                    r#"add "notification.requested" (or a pattern matching it) to emit under [grants] in /srv/plugins/welcome.toml"#
                ),
            "{m}"
        ),
        other => panic!("expected a refusal (a rejection the breaker counts), got {other:?}"),
    }
}

#[test]
fn a_refused_grant_rejects_the_call_even_when_the_guest_swallows_the_error() {
    let rt = runtime();
    let faulty = rt.load_file(&support::plugin("faulty")).unwrap();
    // `emit` granted, `state` not: the guest ignores the refused write and
    // claims success; committing its emit would silently lose the write.
    let mut instance = rt.instance(
        faulty,
        sidecar_grants(&["faulty.*"], false, "/srv/plugins/faulty.toml"),
    );
    let err = instance
        .call(&event("faulty.swallow-refusal", None), 1)
        .expect_err("a refused grant fails the call");
    match &err.failure {
        Failure::Refused(m) => assert!(
            m.contains("no `state` grant") && m.contains("/srv/plugins/faulty.toml"),
            "{m}"
        ),
        other => panic!("expected a refusal (a rejection the breaker counts), got {other:?}"),
    }
    // The refusal belongs to that call only.
    instance
        .call(&event("faulty.ok", None), 1)
        .expect("the next call is not affected");
    assert_eq!(instance.instantiations(), 1);
}

/// Everything `tracing` writes on this thread while `f` runs (the runtime's
/// calls are synchronous, so a call's forwarded output lands here).
fn traced<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let sink = Sink::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8_lossy(&sink.0.lock().unwrap()).into_owned();
    (out, text)
}

#[test]
fn a_plugin_flooding_its_log_is_capped_and_its_timeout_names_the_dropped_output() {
    let rt = runtime();
    let plugin = rt.load_file(&support::plugin("faulty")).unwrap();
    let limit = Duration::from_millis(500);
    let mut instance = rt.instance(
        plugin,
        InstanceSettings {
            limits: Limits {
                timeout: limit,
                ..Limits::default()
            },
            ..granted()
        },
    );
    let (result, output) = traced(|| instance.call(&event("faulty.log-flood", None), 1));
    let failure = result.expect_err("an endless loop times out").failure;

    let forwarded = output
        .lines()
        .filter(|l| l.contains("faulty: flooding the log"))
        .count();
    assert_eq!(forwarded, MAX_OUTPUT_LINES, "lines forwarded to tracing");
    assert!(
        output.len() < 2 * MAX_OUTPUT_BYTES,
        "{} bytes of log for one call",
        output.len()
    );
    let warnings: Vec<&str> = output
        .lines()
        .filter(|l| l.contains("plugin output capped"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning per call: {warnings:?}");

    let Failure::Timeout(LimitHit { limit: hit, note }) = &failure else {
        panic!("expected a timeout, got {failure:?}");
    };
    assert_eq!(*hit, limit);
    let note = note
        .as_deref()
        .expect("the timeout notes the capped output");
    let dropped: u64 = note
        .split("log ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no dropped log line count in {note:?}"));
    assert!(dropped > 0, "{note}");
    let message = failure.to_string();
    assert!(
        message.starts_with("timed out after")
            && message.contains("lines")
            && message.contains("dropped"),
        "{message}"
    );

    // The cap is per call: the next call logs again.
    let (next, output) = traced(|| instance.call(&event("faulty.ok", None), 1));
    next.expect("the next call works");
    assert!(!output.contains("plugin output capped"), "{output}");
}

/// Calls `faulty` with `mode` and then an ordinary event on the same
/// instance, which must still work.
fn faulty_outcome(
    limits: Limits,
    mode: &str,
    data: Option<serde_json::Value>,
) -> (Failure, Duration) {
    let rt = runtime();
    let plugin = rt.load_file(&support::plugin("faulty")).unwrap();
    let mut instance = rt.instance(
        plugin,
        InstanceSettings {
            limits,
            ..granted()
        },
    );
    let started = Instant::now();
    let err = instance
        .call(&event(&format!("faulty.{mode}"), data), 1)
        .expect_err("faulty mode must fail");
    let took = started.elapsed();
    assert_eq!(err.plugin, "faulty");
    let next = instance.call(&event("faulty.ok", None), 1);
    assert!(next.is_ok(), "after {mode}, the next call failed: {next:?}");
    (err.failure, took)
}

#[test]
fn panic_is_a_trap_carrying_the_panic_message() {
    let (failure, _) = faulty_outcome(Limits::default(), "panic", None);
    match failure {
        Failure::Trap(msg) => assert!(msg.contains("panicked"), "{msg}"),
        other => panic!("expected a trap, got {other:?}"),
    }
}

#[test]
fn infinite_loop_times_out_within_twice_the_limit() {
    let limit = Duration::from_millis(500);
    let limits = Limits {
        timeout: limit,
        ..Limits::default()
    };
    let (failure, took) = faulty_outcome(limits, "loop", None);
    assert_eq!(failure, Failure::timeout(limit));
    assert!(took < limit * 2, "took {took:?} for a {limit:?} limit");
}

#[test]
fn fuel_limit_stops_a_loop() {
    let limits = Limits {
        fuel: Some(10_000_000),
        ..Limits::default()
    };
    let (failure, _) = faulty_outcome(limits, "loop", None);
    assert_eq!(failure, Failure::out_of_fuel(10_000_000));
}

#[test]
fn unbounded_allocation_is_out_of_memory() {
    let limits = Limits {
        memory: 32 << 20,
        ..Limits::default()
    };
    let (failure, _) = faulty_outcome(limits, "alloc", None);
    assert!(matches!(failure, Failure::OutOfMemory(_)), "{failure:?}");
}

#[test]
fn deep_recursion_is_a_stack_overflow() {
    let (failure, _) = faulty_outcome(Limits::default(), "recurse", None);
    assert_eq!(failure, Failure::StackOverflow);
}

fn assert_denied(mode: &str, data: Option<serde_json::Value>) {
    let (failure, _) = faulty_outcome(Limits::default(), mode, data);
    match failure {
        Failure::Rejected(msg) => assert!(msg.contains("denied"), "{mode}: {msg}"),
        other => panic!("{mode}: expected the plugin to report denial, got {other:?}"),
    }
}

#[test]
fn plugin_cannot_read_files() {
    assert_denied("read-file", None);
}

#[test]
fn plugin_cannot_read_the_environment() {
    // The host has these; the guest must not see them.
    assert!(std::env::var_os("PATH").is_some());
    assert_denied("read-env", None);
}

#[test]
fn plugin_cannot_open_sockets() {
    // A real listener: if the sandbox leaked, the connect would succeed.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    assert_denied("socket", Some(serde_json::json!({ "port": port })));
}

#[test]
fn handler_reject_and_retry_are_distinct_from_traps() {
    let (reject, _) = faulty_outcome(Limits::default(), "reject", None);
    assert!(matches!(reject, Failure::Rejected(_)), "{reject:?}");
    let (retry, _) = faulty_outcome(Limits::default(), "retry", None);
    assert!(matches!(retry, Failure::Retry(_)), "{retry:?}");
}

#[test]
fn live_instance_is_reused_and_replaced_only_after_a_trap() {
    let rt = runtime();
    let plugin = rt.load_file(&support::plugin("faulty")).unwrap();
    let mut instance = rt.instance(plugin, granted());
    for _ in 0..5 {
        instance.call(&event("faulty.ok", None), 1).unwrap();
    }
    instance.call(&event("faulty.reject", None), 1).unwrap_err();
    assert_eq!(
        instance.instantiations(),
        1,
        "ok and reject keep the live instance"
    );
    instance.call(&event("faulty.panic", None), 1).unwrap_err();
    instance.call(&event("faulty.ok", None), 1).unwrap();
    assert_eq!(instance.instantiations(), 2, "a trap replaces the instance");
}

#[test]
fn failed_call_returns_no_effects_even_after_emitting() {
    // `fail-until` emits nothing on failure by contract of the Result type;
    // here the point is the attempt number reaching the handler.
    let rt = runtime();
    let plugin = rt.load_file(&support::plugin("faulty")).unwrap();
    let mut instance = rt.instance(plugin, granted());
    let ev = event(
        "faulty.fail-until",
        Some(serde_json::json!({"succeed_on_attempt": 3})),
    );
    assert!(matches!(
        instance.call(&ev, 1).unwrap_err().failure,
        Failure::Retry(_)
    ));
    assert!(matches!(
        instance.call(&ev, 2).unwrap_err().failure,
        Failure::Retry(_)
    ));
    instance.call(&ev, 3).expect("third attempt succeeds");
}

fn load_err(bytes: &[u8]) -> LoadError {
    runtime()
        .load_bytes("bad.wasm", bytes)
        .expect_err("must be refused")
}

#[test]
fn random_bytes_are_refused_as_not_wasm() {
    let err = load_err(b"this is certainly not a wasm component at all");
    assert!(matches!(err, LoadError::NotWasm { .. }), "{err:?}");
    assert!(err.to_string().contains("not a WebAssembly file"), "{err}");
}

#[test]
fn core_module_is_refused_with_a_hint() {
    let core = wat::parse_str("(module (func (export \"handle\")))").unwrap();
    let err = load_err(&core);
    assert!(matches!(err, LoadError::CoreModule { .. }), "{err:?}");
    assert!(err.to_string().contains("wasm32-wasip2"), "{err}");
}

#[test]
fn truncated_component_is_refused_as_truncated() {
    let bytes = std::fs::read(support::plugin("counter")).unwrap();
    let err = load_err(&bytes[..bytes.len() / 2]);
    assert!(matches!(err, LoadError::Truncated { .. }), "{err:?}");
    assert!(err.to_string().contains("truncated"), "{err}");
}

#[test]
fn component_of_another_world_is_refused_naming_the_missing_exports() {
    let foreign = wat::parse_str(
        r#"(component
            (core module $m (func (export "run")))
            (core instance $i (instantiate $m))
            (func $run (canon lift (core func $i "run")))
            (export "run" (func $run)))"#,
    )
    .unwrap();
    let err = load_err(&foreign);
    assert!(matches!(err, LoadError::MissingExports { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("`describe`") && msg.contains("`handle`") && msg.contains("`run`"),
        "{msg}"
    );
}

#[test]
fn component_with_wrong_signatures_is_refused_as_world_mismatch() {
    let wrong = wat::parse_str(
        r#"(component
            (core module $m (func (export "f")))
            (core instance $i (instantiate $m))
            (func $f (canon lift (core func $i "f")))
            (export "describe" (func $f))
            (export "handle" (func $f)))"#,
    )
    .unwrap();
    let err = load_err(&wrong);
    assert!(matches!(err, LoadError::WorldMismatch { .. }), "{err:?}");
}

#[test]
fn component_importing_an_unknown_interface_is_refused_naming_it() {
    // (wasi:http is linked since issue 16; a key-value store is not.)
    let needs_kv = wat::parse_str(
        r#"(component
            (import "wasi:keyvalue/store@0.2.0" (instance
                (export "open" (func))))
            (core module $m (func (export "f")))
            (core instance $i (instantiate $m))
            (func $f (canon lift (core func $i "f")))
            (export "describe" (func $f))
            (export "handle" (func $f)))"#,
    )
    .unwrap();
    let err = load_err(&needs_kv);
    assert!(
        matches!(err, LoadError::UnsupportedImport { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("wasi:keyvalue/store@0.2.0"),
        "{err}"
    );
}

#[test]
fn second_load_uses_the_precompiled_cache() {
    let dir = tempfile::tempdir().unwrap();
    let config = RuntimeConfig {
        cache_dir: Some(dir.path().join("cache")),
        ..Default::default()
    };
    let path = support::plugin("counter");

    let first = Runtime::new(config.clone()).unwrap();
    let cold = first.load_file(&path).unwrap();
    assert_eq!(cold.origin, Origin::Compiled);
    drop(first);

    // A fresh runtime, as after a restart.
    let second = Runtime::new(config).unwrap();
    let warm = second.load_file(&path).unwrap();
    assert_eq!(warm.origin, Origin::Cache);
    assert_eq!(
        second
            .cache_stats()
            .hits
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(warm.digest, cold.digest);
    // And the cached code runs.
    let mut instance = second.instance(warm, granted());
    instance.call(&event("a.b", None), 1).unwrap();
}

#[test]
fn corrupt_cache_entry_is_discarded_and_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let config = RuntimeConfig {
        cache_dir: Some(cache.clone()),
        ..Default::default()
    };
    let path = support::plugin("counter");
    Runtime::new(config.clone())
        .unwrap()
        .load_file(&path)
        .unwrap();
    for entry in std::fs::read_dir(&cache).unwrap() {
        std::fs::write(entry.unwrap().path(), b"garbage").unwrap();
    }
    let plugin = Runtime::new(config).unwrap().load_file(&path).unwrap();
    assert_eq!(plugin.origin, Origin::Compiled);
}

#[test]
fn interrupt_all_stops_a_running_call_as_a_host_error() {
    let rt = Arc::new(runtime());
    let plugin = rt.load_file(&support::plugin("faulty")).unwrap();
    let mut instance = rt.instance(
        plugin,
        InstanceSettings {
            limits: Limits {
                timeout: Duration::from_secs(60),
                ..Limits::default()
            },
            ..granted()
        },
    );
    let interrupter = {
        let rt = rt.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            rt.interrupt_all();
        })
    };
    let started = Instant::now();
    let err = instance
        .call(&event("faulty.loop", None), 1)
        .expect_err("interrupted");
    interrupter.join().unwrap();
    assert!(matches!(err.failure, Failure::Host(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn a_full_instance_pool_is_a_host_error_naming_the_setting() {
    let rt = Runtime::new(RuntimeConfig {
        pool: PoolConfig {
            instances: 2,
            source: "in /etc/evhost.toml".into(),
            ..PoolConfig::default()
        },
        ..RuntimeConfig::default()
    })
    .expect("runtime starts");
    let plugin = rt.load_file(&support::plugin("faulty")).unwrap();
    let ok = event("faulty.ok", None);
    let mut first = rt.instance(plugin.clone(), granted());
    let mut second = rt.instance(plugin.clone(), granted());
    first.call(&ok, 1).expect("slot 1");
    second.call(&ok, 1).expect("slot 2");

    let mut third = rt.instance(plugin.clone(), granted());
    let err = third
        .call(&ok, 1)
        .expect_err("the pool holds two instances");
    match &err.failure {
        Failure::Host(msg) => assert!(
            msg.contains("`[runtime] instances = 2` in /etc/evhost.toml"),
            "{msg}"
        ),
        other => panic!("expected a host error, got {other:?}"),
    }
    // A freed slot is used again.
    drop(first);
    third.call(&ok, 1).expect("a slot was freed");
}

#[test]
fn a_memory_limit_as_large_as_the_pool_slot_is_still_reported_as_out_of_memory() {
    let rt = Runtime::new(RuntimeConfig {
        pool: PoolConfig {
            instance_memory: 64 << 20,
            ..PoolConfig::default()
        },
        ..RuntimeConfig::default()
    })
    .expect("runtime starts");
    let plugin = rt.load_file(&support::plugin("faulty")).unwrap();
    let limits = Limits {
        memory: 64 << 20,
        ..Limits::default()
    };
    let mut instance = rt.instance(
        plugin,
        InstanceSettings {
            limits,
            ..granted()
        },
    );
    let err = instance
        .call(&event("faulty.alloc", None), 1)
        .expect_err("allocates without end");
    assert!(
        matches!(err.failure, Failure::OutOfMemory(_)),
        "{:?}",
        err.failure
    );
}
