//! The `evhost` command line: argument parsing and output only; the work is
//! done by the library.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use evhost::event::{self, Event, Position, StoredEvent};
use evhost::runtime::{Grants, InstanceSettings, LoadedPlugin, Runtime, RuntimeConfig};

#[derive(Parser)]
#[command(
    name = "evhost",
    version,
    about = "WebAssembly-plugin event pipeline host"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load a plugin, check that it fits the evhost:plugin world and print what it describes.
    Check {
        /// The plugin component (`NAME.wasm`).
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Call a plugin's handler once with an event, without a daemon, and print
    /// what the call would commit (emits and state writes) or why it failed.
    Call {
        /// The plugin component (`NAME.wasm`).
        file: PathBuf,
        /// CloudEvents `type` of the event.
        #[arg(long = "type")]
        ty: String,
        /// The event's data, as JSON text.
        #[arg(long)]
        data: Option<String>,
        /// CloudEvents `subject` (the key).
        #[arg(long)]
        subject: Option<String>,
        /// Operator config values for the plugin, `KEY=VALUE`.
        #[arg(long = "config", value_parser = parse_key_value)]
        config: Vec<(String, String)>,
        /// Grant `emit` (all types) and `state`; without it the call has only `log` and `config`.
        #[arg(long)]
        grant_all: bool,
    },
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "evhost=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check { file, json } => {
            let runtime = Runtime::new(RuntimeConfig::default())?;
            let plugin = runtime.load_file(&file)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&check_report(&plugin))?);
            } else {
                print_check(&plugin);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Call {
            file,
            ty,
            data,
            subject,
            config,
            grant_all,
        } => {
            let runtime = Runtime::new(RuntimeConfig::default())?;
            let plugin = runtime.load_file(&file)?;
            if let Some(d) = &data {
                serde_json::from_str::<serde_json::Value>(d).context("--data is not valid JSON")?;
            }
            let settings = InstanceSettings {
                grants: if grant_all {
                    Grants::all()
                } else {
                    Grants::default()
                },
                config: config.into_iter().collect::<BTreeMap<_, _>>(),
                ..Default::default()
            };
            let mut instance = runtime.instance(plugin, settings);
            let id = event::new_event_id();
            let topic = event::topic_for_type(&ty);
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
                    ty,
                    subject,
                    time: event::now_rfc3339(),
                    datacontenttype: data.as_ref().map(|_| "application/json".into()),
                    dataschema: None,
                    data: data.map(String::into_bytes),
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
                    Ok(ExitCode::from(2))
                }
            }
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
