//! `evhost check FILE.wasm` and `evhost call FILE.wasm`: a plugin file
//! without a daemon, through the author commands' compile cache (a second
//! run of a large component does not compile again).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;

use crate::dispatch::Matcher;
use crate::event::{self, Event, Position, StoredEvent};
use crate::plugins::Sidecar;
use crate::runtime::{GrantSource, Grants, InstanceSettings, LoadedPlugin, Origin, Runtime};

/// Exit code of `evhost call` when the handler failed.
pub const EXIT_FAILED: u8 = 2;
/// Exit code of `evhost call` when the event matches none of the plugin's
/// subscriptions: the daemon would not deliver it, so it is not called.
pub const EXIT_NOT_DELIVERED: u8 = 3;

/// Loads `file` and says on stderr whether it was compiled or came from the cache.
fn load(runtime: &Runtime, file: &Path) -> Result<Arc<LoadedPlugin>, crate::runtime::LoadError> {
    let plugin = runtime.load_file(file)?;
    eprintln!(
        "loaded {} {} ({} in {:.0} ms)",
        plugin.info.name,
        plugin.info.version,
        match plugin.origin {
            Origin::Compiled => "compiled",
            Origin::Cache => "from the compile cache",
        },
        plugin.load_time.as_secs_f64() * 1e3
    );
    Ok(plugin)
}

pub fn check(runtime: &Runtime, file: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let plugin = match load(runtime, file) {
        Ok(plugin) => plugin,
        // Scripts get the failure on stdout too, in the API's error shape.
        Err(e) if json => {
            let error = serde_json::json!({
                "error": {"code": e.code(), "message": e.to_string()}
            });
            println!("{}", serde_json::to_string_pretty(&error)?);
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Err(e.into()),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&check_report(&plugin))?);
    } else {
        print_check(&plugin);
    }
    Ok(ExitCode::SUCCESS)
}

/// What `evhost call` delivers, and how the plugin is set up.
#[derive(Debug, Clone)]
pub struct CallRequest {
    pub file: PathBuf,
    pub ty: String,
    pub data: Option<String>,
    pub subject: Option<String>,
    /// Default: derived from the type, as for a publish.
    pub topic: Option<String>,
    /// `KEY=VALUE`s, over the sidecar's `[config]`.
    pub config: Vec<(String, String)>,
    /// The operator's sidecar: its grants, subscriptions, limits and config apply.
    pub sidecar: Option<PathBuf>,
    pub grant_all: bool,
}

pub fn call(runtime: &Runtime, req: CallRequest) -> anyhow::Result<ExitCode> {
    if let Some(d) = &req.data {
        serde_json::from_str::<serde_json::Value>(d).context("--data is not valid JSON")?;
    }
    let sidecar = match &req.sidecar {
        Some(path) => Some((
            path,
            Sidecar::read(path).map_err(|e| anyhow::anyhow!("sidecar {}: {e}", path.display()))?,
        )),
        None => None,
    };
    let plugin = load(runtime, &req.file)?;
    let mut settings = InstanceSettings::default();
    let mut subscriptions = plugin.info.subscriptions.clone();
    match &sidecar {
        Some((path, sidecar)) => {
            let s = sidecar
                .settings(plugin.info.retry.as_ref())
                .map_err(|e| anyhow::anyhow!("sidecar {}: {e}", path.display()))?;
            settings.grants = s
                .grants
                .from_source(GrantSource::Sidecar(path.to_path_buf()));
            settings.limits = s.limits;
            settings.config = s.config;
            if let Some(subs) = s.subscriptions {
                subscriptions = subs;
            }
        }
        None => {
            settings.grants = Grants::default().from_source(GrantSource::Described(
                "give the operator's sidecar with --sidecar FILE, or rerun with --grant-all".into(),
            ))
        }
    }
    if req.grant_all {
        settings.grants = Grants::all();
    }
    settings.config.extend(req.config.iter().cloned());

    let topic = req
        .topic
        .clone()
        .unwrap_or_else(|| event::topic_for_type(&req.ty));
    let matcher = Matcher::new(&subscriptions).context("invalid subscription pattern")?;
    if !(matcher.topic_matches(&topic) && matcher.type_filter(&topic).matches(&req.ty)) {
        let subs: Vec<String> = subscriptions
            .iter()
            .map(|s| format!("topic {} type {}", s.topic, s.event_type))
            .collect();
        println!(
            "not delivered: an event of type `{}` on topic `{topic}` matches none of the \
             subscriptions of `{}` ({})",
            req.ty,
            plugin.info.name,
            if subs.is_empty() {
                "it has none".to_owned()
            } else {
                subs.join("; ")
            }
        );
        return Ok(ExitCode::from(EXIT_NOT_DELIVERED));
    }

    let mut instance = runtime.instance(plugin, settings);
    let id = event::new_event_id();
    let stored = Arc::new(StoredEvent {
        position: Position {
            topic,
            partition: 0,
            offset: 0,
        },
        event: Event {
            id: id.clone(),
            source: "evhost://cli".into(),
            specversion: event::SPEC_VERSION.into(),
            ty: req.ty,
            subject: req.subject,
            time: event::now_rfc3339(),
            datacontenttype: req.data.as_ref().map(|_| "application/json".into()),
            dataschema: None,
            data: req.data.map(String::into_bytes),
            correlationid: id,
            causationid: None,
            actor: None,
            extensions: BTreeMap::new(),
            stream: None,
            streamversion: None,
        },
    });
    match instance.call(&stored, 1) {
        Ok(effects) => {
            println!("ok");
            for e in &effects.emits {
                let data = e
                    .event
                    .data
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default();
                println!(
                    "emit  {} → {}  id={}  data={data}",
                    e.event.ty, e.topic, e.event.id
                );
            }
            for (k, v) in &effects.state {
                match v {
                    Some(v) => println!("state set {k} = {}", String::from_utf8_lossy(v)),
                    None => println!("state delete {k}"),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("failed: {e}");
            Ok(ExitCode::from(EXIT_FAILED))
        }
    }
}

fn check_report(p: &LoadedPlugin) -> serde_json::Value {
    serde_json::json!({
        "name": p.info.name,
        "version": p.info.version,
        "digest": p.digest,
        "size": p.size,
        "subscriptions": p.info.subscriptions,
        "retry": p.info.retry,
        "imports": p.imports,
    })
}

fn print_check(p: &LoadedPlugin) {
    let info = &p.info;
    println!(
        "ok: {} {} fits evhost:plugin/plugin@0.1.0",
        info.name, info.version
    );
    println!("  digest  sha256:{}", p.digest);
    println!("  size    {} bytes", p.size);
    if info.subscriptions.is_empty() {
        println!("  subscriptions: none (the operator's sidecar must set them)");
    }
    for s in &info.subscriptions {
        println!("  subscribes  topic {:<24} type {}", s.topic, s.event_type);
    }
    match &info.retry {
        Some(r) => println!(
            "  retry   {} attempts, backoff {:?} ×{} up to {:?}, jitter {}",
            r.max_attempts, r.initial_backoff, r.multiplier, r.max_backoff, r.jitter
        ),
        None => println!("  retry   host default"),
    }
    println!("  imports {}", p.imports.join(", "));
}
