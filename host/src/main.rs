//! The `evhost` command line: argument parsing and output only; the work is
//! done by the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use evhost::cli::author::{self, Lang};
use evhost::cli::{self, Client, DataSource, PublishRequest, TailRequest};
use evhost::config::{self, LogFormat, Overrides};

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
// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Run the daemon: the durable log, the plugins of the plugin directory, the HTTP API.
    Run(RunArgs),
    /// Publish one event to the running daemon (CloudEvents structured mode).
    Publish {
        /// CloudEvents `type`, e.g. `user.created`; the topic is derived from it unless --topic.
        #[arg(long = "type", short = 't')]
        ty: String,
        /// The data: JSON text, `-` for stdin, or `@FILE`.
        #[arg(long, short = 'd')]
        data: Option<String>,
        /// Read the data from this file.
        #[arg(long, conflicts_with = "data")]
        data_file: Option<PathBuf>,
        /// The partition key (CloudEvents `subject`): events with one key stay in order.
        #[arg(long, short = 'k')]
        key: Option<String>,
        /// The event id (default: a UUIDv7 assigned by the daemon); publishing an id twice
        /// within the dedupe window stores it once.
        #[arg(long)]
        id: Option<String>,
        /// CloudEvents `source`.
        #[arg(long, default_value = "evhost://cli")]
        source: String,
        /// Publish to this topic instead of the one derived from the type.
        #[arg(long)]
        topic: Option<String>,
        /// Content type of the data; JSON unless told otherwise.
        #[arg(long, default_value = "application/json")]
        content_type: String,
        /// CloudEvents `dataschema`: selects the registered schema version
        /// (`.../schemas/TYPE/VERSION`).
        #[arg(long)]
        dataschema: Option<String>,
        /// The flow this event belongs to (default: its own id).
        #[arg(long)]
        correlationid: Option<String>,
        /// The id of the event that caused this one.
        #[arg(long)]
        causationid: Option<String>,
        /// Who caused the event.
        #[arg(long)]
        actor: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print a topic's events; with --follow, keep printing new ones as they arrive.
    Tail {
        topic: String,
        #[arg(long, short = 'p')]
        partition: Option<u32>,
        /// First offset (default: 0; with --follow, only new events).
        #[arg(long)]
        from: Option<u64>,
        /// Most events to print (without --follow; default 100).
        #[arg(long, short = 'n')]
        limit: Option<usize>,
        #[arg(long, short = 'f')]
        follow: bool,
        /// With --follow: exit after this many events.
        #[arg(long)]
        count: Option<usize>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the plugins: version, state, lag, counts, last error.
    Plugins {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// A plugin's committed key-value state.
    State {
        /// The plugin name.
        plugin: String,
        /// Only keys starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// At most this many entries (1 to 1000).
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Dead letters: list, show, replay, purge.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Topics: create one with a partition count (and retention).
    Topic {
        #[command(subcommand)]
        command: TopicCommand,
    },
    /// Move a plugin's consumer offset on one partition (applied between batches).
    Seek {
        plugin: String,
        topic: String,
        partition: u32,
        offset: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Topics, offsets and plugins of the running daemon.
    Status {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The schema registry: JSON Schemas for event types.
    Schema {
        #[command(subcommand)]
        command: SchemaCommand,
    },
    /// Create a new plugin project in ./NAME that builds as it stands.
    New {
        /// The plugin's name: 1 to 64 lowercase letters, digits or '-', starting with a letter.
        name: String,
        /// The language of the project.
        #[arg(long, value_enum, default_value = "rust")]
        lang: LangArg,
        /// Directory to create (default: ./NAME).
        #[arg(long)]
        path: Option<PathBuf>,
        /// Rust: use this evhost-sdk checkout (default: the one this evhost was built from).
        #[arg(long)]
        sdk_path: Option<PathBuf>,
    },
    /// Build a plugin project (its language detected) into DIR/dist/NAME.wasm, checked
    /// against the world, with its sidecar DIR/dist/NAME.toml.
    Build {
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Build a plugin project and install it into a daemon's plugin directory (atomically).
    Deploy {
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// The daemon's plugin directory.
        #[arg(long, env = "EVHOST_PLUGINS")]
        plugins: PathBuf,
    },
    /// Deploy, then rebuild and redeploy on every change of the sources (Ctrl-C stops).
    Dev {
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// The daemon's plugin directory.
        #[arg(long, env = "EVHOST_PLUGINS")]
        plugins: PathBuf,
    },
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
        /// The topic (default: derived from the type, as for a publish).
        #[arg(long)]
        topic: Option<String>,
        /// Operator config values for the plugin, `KEY=VALUE` (over the sidecar's).
        #[arg(long = "config", value_parser = parse_key_value)]
        config: Vec<(String, String)>,
        /// The operator's sidecar (`NAME.toml`): its grants, subscriptions, limits and config apply.
        #[arg(long)]
        sidecar: Option<PathBuf>,
        /// Grant `emit` (all types) and `state`; without it (or a sidecar) the call has only
        /// `log` and `config`.
        #[arg(long)]
        grant_all: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LangArg {
    Rust,
    Python,
    Js,
}

#[derive(Args)]
struct RunArgs {
    /// TOML configuration file (unknown keys are refused).
    #[arg(long, env = "EVHOST_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory: the log, the component cache, schemas (default ./evhost-data).
    #[arg(long, env = "EVHOST_DATA")]
    data: Option<PathBuf>,
    /// Plugin directory: every NAME.wasm (+ NAME.toml sidecar) is loaded (default ./plugins).
    #[arg(long, env = "EVHOST_PLUGINS")]
    plugins: Option<PathBuf>,
    /// Address of the HTTP API (default 127.0.0.1:7070; port 0 picks a free one).
    #[arg(long, env = "EVHOST_LISTEN")]
    listen: Option<SocketAddr>,
    /// `text` (default) or `json` log lines on stderr.
    #[arg(long, env = "EVHOST_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    /// Require `Authorization: Bearer TOKEN` on mutating requests.
    #[arg(long, env = "EVHOST_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Where the event log lives: `redb` (default: DATA/log.redb) or
    /// `nats://HOST:PORT[,nats://HOST:PORT...]` (a NATS JetStream cluster).
    #[arg(long, env = "EVHOST_LOG")]
    log: Option<String>,
    /// Register the JSON Schemas in DIR/TYPE/VERSION.json at start.
    #[arg(long, env = "EVHOST_SCHEMAS")]
    schemas: Option<PathBuf>,
}

#[derive(Args, Clone)]
struct ClientArgs {
    /// The daemon's address.
    #[arg(long, env = "EVHOST_SERVER", default_value = "http://127.0.0.1:7070")]
    server: String,
    /// Bearer token, when the daemon requires one.
    #[arg(long, env = "EVHOST_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the API's JSON instead of tables.
    #[arg(long)]
    json: bool,
}

impl ClientArgs {
    fn client(&self) -> Client {
        Client::new(&self.server, self.token.clone())
    }
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List dead letters, oldest first.
    List {
        #[arg(long)]
        plugin: Option<String>,
        #[arg(long, short = 'n')]
        limit: Option<usize>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one dead letter with its event.
    Show {
        id: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Re-deliver one dead letter (or every one of --plugin) to the current plugin version.
    Replay {
        #[arg(required_unless_present = "plugin")]
        id: Option<u64>,
        #[arg(long, conflicts_with = "id")]
        plugin: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete dead letters: the given IDs, every one of --plugin, or --all.
    Purge {
        ids: Vec<u64>,
        #[arg(long)]
        plugin: Option<String>,
        #[arg(long, conflicts_with = "plugin")]
        all: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand)]
enum TopicCommand {
    /// Create a topic (the only way when auto-create-topics = false).
    Create {
        name: String,
        #[arg(long, short = 'p', default_value_t = 1)]
        partitions: u32,
        /// Delete events older than this (e.g. "7d"); default: the daemon's.
        #[arg(long, value_parser = humantime::parse_duration)]
        retention_max_age: Option<std::time::Duration>,
        /// Keep at most this many bytes per partition; default: the daemon's.
        #[arg(long)]
        retention_max_partition_bytes: Option<u64>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand)]
enum SchemaCommand {
    /// Register a JSON Schema (from FILE, or - for stdin) for an event type and version.
    Put {
        #[arg(value_name = "TYPE")]
        ty: String,
        version: String,
        file: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the registered schemas.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "evhost=info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run(_)) {
        // A client command piped into `head` should end quietly when the pipe closes,
        // as Unix tools do, instead of panicking on the failed write.
        // SAFETY: restoring the default disposition of a signal before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let format = match &cli.command {
        Command::Run(args) => args.log_format.unwrap_or(LogFormat::Text),
        _ => LogFormat::Text,
    };
    init_tracing(format);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", cli::error_report(&e));
            ExitCode::FAILURE
        }
    }
}

/// Resolves when SIGTERM or SIGINT arrives.
async fn termination() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; stop with Ctrl-C");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn run_daemon(args: RunArgs) -> anyhow::Result<ExitCode> {
    let overrides = Overrides {
        data_dir: args.data,
        plugin_dir: args.plugins,
        listen: args.listen,
        log_format: args.log_format,
        token: args.token,
        log: args
            .log
            .as_deref()
            .map(config::parse_log_spec)
            .transpose()
            .map_err(anyhow::Error::msg)?,
        schemas_dir: args.schemas,
    };
    let config = config::load(args.config.as_deref(), overrides)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("evhost")
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(evhost::daemon::run(config, termination()))?;
    // Blocking tasks still parked (a plugin call past its deadline) must not hold up exit.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(ExitCode::SUCCESS)
}

fn data_source(data: Option<String>, file: Option<PathBuf>) -> DataSource {
    match (data, file) {
        (_, Some(f)) => DataSource::File(f),
        (Some(d), None) if d == "-" => DataSource::Stdin,
        (Some(d), None) => match d.strip_prefix('@') {
            Some(f) => DataSource::File(PathBuf::from(f)),
            None => DataSource::Inline(d),
        },
        (None, None) => DataSource::None,
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => run_daemon(args),
        Command::Publish {
            ty,
            data,
            data_file,
            key,
            id,
            source,
            topic,
            content_type,
            dataschema,
            correlationid,
            causationid,
            actor,
            client,
        } => {
            let req = PublishRequest {
                ty,
                data: data_source(data, data_file),
                key,
                id,
                source,
                topic,
                content_type,
                attributes: [
                    ("dataschema", dataschema),
                    ("correlationid", correlationid),
                    ("causationid", causationid),
                    ("actor", actor),
                ]
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k, v)))
                .collect(),
            };
            cli::publish(&client.client(), req, client.json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Tail {
            topic,
            partition,
            from,
            limit,
            follow,
            count,
            client,
        } => {
            let req = TailRequest {
                topic,
                partition,
                from,
                limit,
                follow,
                count,
            };
            cli::tail(&client.client(), req, client.json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugins { client } => {
            cli::plugins(&client.client(), client.json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::State {
            plugin,
            prefix,
            limit,
            client,
        } => {
            cli::state(&client.client(), &plugin, &prefix, limit, client.json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dlq { command } => {
            match command {
                DlqCommand::List {
                    plugin,
                    limit,
                    client,
                } => cli::dlq_list(&client.client(), plugin.as_deref(), limit, client.json)?,
                DlqCommand::Show { id, client } => {
                    cli::dlq_show(&client.client(), id, client.json)?
                }
                DlqCommand::Replay { id, plugin, client } => {
                    cli::dlq_replay(&client.client(), id, plugin.as_deref(), client.json)?
                }
                DlqCommand::Purge {
                    ids,
                    plugin,
                    all,
                    client,
                } => cli::dlq_purge(&client.client(), &ids, plugin.as_deref(), all, client.json)?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Topic {
            command:
                TopicCommand::Create {
                    name,
                    partitions,
                    retention_max_age,
                    retention_max_partition_bytes,
                    client,
                },
        } => {
            let req = cli::operator::TopicCreate {
                name,
                partitions,
                max_age_seconds: retention_max_age.map(|d| d.as_secs().max(1)),
                max_partition_bytes: retention_max_partition_bytes,
            };
            cli::operator::topic_create(&client.client(), req, client.json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Seek {
            plugin,
            topic,
            partition,
            offset,
            client,
        } => {
            cli::operator::seek(
                &client.client(),
                &plugin,
                &topic,
                partition,
                offset,
                client.json,
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { client } => {
            cli::status(&client.client(), client.json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema { command } => {
            match command {
                SchemaCommand::Put {
                    ty,
                    version,
                    file,
                    client,
                } => cli::schema_put(&client.client(), &ty, &version, &file, client.json)?,
                SchemaCommand::List { client } => cli::schema_list(&client.client(), client.json)?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::New {
            name,
            lang,
            path,
            sdk_path,
        } => {
            let lang = match lang {
                LangArg::Rust => Lang::Rust,
                LangArg::Python => Lang::Python,
                LangArg::Js => Lang::Js,
            };
            let sdk = match sdk_path {
                Some(p) => Some(author::rust::SdkSource::Path(
                    p.canonicalize()
                        .with_context(|| format!("--sdk-path {}", p.display()))?,
                )),
                None => None,
            };
            let dir = path.unwrap_or_else(|| PathBuf::from(&name));
            author::new_project(&name, &dir, lang, sdk)?;
            println!("created {} plugin {name} in {}", lang.name(), dir.display());
            println!(
                "\nnext:\n  cd {}\n  {}\n  evhost build\n  evhost deploy --plugins PLUGIN_DIR",
                dir.display(),
                match lang {
                    Lang::Rust => "cargo test",
                    Lang::Python => "python -m pytest",
                    Lang::Js => "node --test",
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Build { dir } => {
            let built = author::build(&author::runtime()?, &dir)?;
            println!(
                "built {} {} → {}",
                built.name,
                built.version,
                built.wasm.display()
            );
            if let Some(s) = &built.sidecar {
                println!("  sidecar → {}", s.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Deploy { dir, plugins } => {
            author::build_and_deploy(&author::runtime()?, &dir, &plugins)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dev { dir, plugins } => {
            author::dev(&dir, &plugins)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { file, json } => cli::call::check(&author::runtime()?, &file, json),
        Command::Call {
            file,
            ty,
            data,
            subject,
            topic,
            config,
            sidecar,
            grant_all,
        } => {
            let req = cli::call::CallRequest {
                file,
                ty,
                data,
                subject,
                topic,
                config,
                sidecar,
                grant_all,
            };
            cli::call::call(&author::runtime()?, req)
        }
    }
}
