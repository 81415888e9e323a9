//! The client side of the `evhost` commands: each talks to a running daemon
//! over the HTTP API and prints a human table, or the API's JSON with `--json`.
//! Argument parsing stays in `main.rs`; these take ready values.
//!
//! - `client`: the blocking HTTP client.
//! - `table`: aligned text tables.
//! - `scaffold`: `evhost new`.

pub mod author;
pub mod client;
pub mod scaffold;
pub mod table;

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

pub use self::client::{Client, ClientError};
use self::table::{Table, clip};

/// Where `publish` takes the event's data from.
#[derive(Debug, Clone)]
pub enum DataSource {
    None,
    Inline(String),
    File(PathBuf),
    Stdin,
}

/// What `evhost publish` sends.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    pub ty: String,
    pub data: DataSource,
    /// `subject`: the partition key.
    pub key: Option<String>,
    pub id: Option<String>,
    pub source: String,
    pub topic: Option<String>,
    pub content_type: String,
    /// Further CloudEvents attributes (`dataschema`, `correlationid`, ...).
    pub attributes: Vec<(&'static str, String)>,
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn is_json_type(ct: &str) -> bool {
    let m = ct.split(';').next().unwrap_or("").trim();
    m == "application/json" || m.ends_with("+json")
}

pub fn publish(client: &Client, req: PublishRequest, json_out: bool) -> anyhow::Result<()> {
    let bytes = match &req.data {
        DataSource::None => None,
        DataSource::Inline(s) => Some(s.clone().into_bytes()),
        DataSource::File(p) => {
            Some(std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?)
        }
        DataSource::Stdin => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("cannot read stdin")?;
            Some(buf)
        }
    };
    let mut event = json!({
        "specversion": "1.0",
        "type": req.ty,
        "source": req.source,
    });
    if let Some(id) = &req.id {
        event["id"] = id.clone().into();
    }
    if let Some(key) = &req.key {
        event["subject"] = key.clone().into();
    }
    for (name, value) in &req.attributes {
        event[*name] = value.clone().into();
    }
    if let Some(bytes) = bytes {
        event["datacontenttype"] = req.content_type.clone().into();
        if is_json_type(&req.content_type) {
            let value: Value = serde_json::from_slice(&bytes)
                .context("the data is not valid JSON (give --content-type for other data)")?;
            event["data"] = value;
        } else {
            match String::from_utf8(bytes) {
                Ok(text) => event["data"] = text.into(),
                Err(e) => {
                    use base64::Engine as _;
                    event["data_base64"] = base64::engine::general_purpose::STANDARD
                        .encode(e.into_bytes())
                        .into();
                }
            }
        }
    }
    let path = match &req.topic {
        Some(t) => format!("/v1/topics/{}/events", encode(t)),
        None => "/v1/events".to_owned(),
    };
    let answer = client.post(
        &path,
        "application/cloudevents+json",
        &[],
        event.to_string().as_bytes(),
    )?;
    if json_out {
        print_json(&answer.body);
        return Ok(());
    }
    for e in answer.body["events"].as_array().into_iter().flatten() {
        println!(
            "published {} to {} partition {} offset {}{}",
            e["id"].as_str().unwrap_or("?"),
            e["topic"].as_str().unwrap_or("?"),
            e["partition"],
            e["offset"],
            if e["duplicate"] == true {
                " (a duplicate: the original's position)"
            } else {
                ""
            }
        );
    }
    Ok(())
}

/// Percent-encodes a path segment.
fn encode(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn event_line(e: &Value) -> String {
    let data = match (&e["data"], &e["data_base64"]) {
        (Value::Null, Value::String(b)) => format!("(base64) {b}"),
        (Value::Null, _) => String::new(),
        (Value::String(s), _) => s.clone(),
        (other, _) => other.to_string(),
    };
    format!(
        "{}:{}  {}  {}  {}  {}",
        e["partition"],
        e["offset"],
        e["time"].as_str().unwrap_or(""),
        e["type"].as_str().unwrap_or(""),
        e["subject"].as_str().unwrap_or("-"),
        clip(&data, 200)
    )
}

/// What `evhost tail` reads.
#[derive(Debug, Clone)]
pub struct TailRequest {
    pub topic: String,
    pub partition: Option<u32>,
    pub from: Option<u64>,
    pub limit: Option<usize>,
    pub follow: bool,
    /// Stop after this many events (follow mode); for scripts and tests.
    pub count: Option<usize>,
}

pub fn tail(client: &Client, req: TailRequest, json_out: bool) -> anyhow::Result<()> {
    let mut query = Vec::new();
    if let Some(p) = req.partition {
        query.push(format!("partition={p}"));
    }
    if let Some(f) = req.from {
        query.push(format!("from={f}"));
    }
    let topic = encode(&req.topic);
    let out = std::io::stdout();
    let print = |e: &Value| {
        let mut out = out.lock();
        let line = if json_out {
            e.to_string()
        } else {
            event_line(e)
        };
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    if req.follow {
        query.push("follow=true".into());
        let mut seen = 0usize;
        client.stream(
            &format!("/v1/topics/{topic}/events?{}", query.join("&")),
            |data| {
                if let Ok(e) = serde_json::from_str::<Value>(data) {
                    print(&e);
                    seen += 1;
                }
                req.count.is_none_or(|c| seen < c)
            },
        )?;
        return Ok(());
    }
    if let Some(l) = req.limit {
        query.push(format!("limit={l}"));
    }
    let answer = client.get(&format!("/v1/topics/{topic}/events?{}", query.join("&")))?;
    for e in answer.body["events"].as_array().into_iter().flatten() {
        print(e);
    }
    Ok(())
}

fn plugins_table(plugins: &[Value]) -> Table {
    let mut t = Table::new(&[
        "NAME",
        "VERSION",
        "STATE",
        "LAG",
        "HANDLED",
        "FAILED",
        "DLQ",
        "LAST ERROR",
    ]);
    for p in plugins {
        let num = |k: &str| p[k].as_u64().map_or("-".to_owned(), |n| n.to_string());
        t.row(vec![
            p["name"].as_str().unwrap_or("?").to_owned(),
            p["version"].as_str().unwrap_or("-").to_owned(),
            p["state"].as_str().unwrap_or("?").to_owned(),
            num("lag"),
            num("processed"),
            num("failed"),
            num("dead_lettered"),
            clip(p["last_error"].as_str().unwrap_or(""), 100),
        ]);
    }
    t
}

pub fn plugins(client: &Client, json_out: bool) -> anyhow::Result<()> {
    let answer = client.get("/v1/plugins")?;
    if json_out {
        print_json(&answer.body);
        return Ok(());
    }
    print_plugins(&answer.body);
    Ok(())
}

fn print_plugins(body: &Value) {
    let list = body["plugins"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("no plugins loaded");
    } else {
        print!("{}", plugins_table(&list).render());
    }
}

pub fn state(
    client: &Client,
    plugin: &str,
    prefix: &str,
    limit: Option<usize>,
    json_out: bool,
) -> anyhow::Result<()> {
    let mut path = format!(
        "/v1/plugins/{}/state?prefix={}",
        encode(plugin),
        encode(prefix)
    );
    if let Some(l) = limit {
        path.push_str(&format!("&limit={l}"));
    }
    let answer = client.get(&path)?;
    if json_out {
        print_json(&answer.body);
        return Ok(());
    }
    let entries = answer.body["entries"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if entries.is_empty() {
        println!("no state for {plugin} under {prefix:?}");
    }
    for e in &entries {
        println!("{}  {}", e["key"].as_str().unwrap_or_default(), e["value"]);
    }
    if answer.body["truncated"] == true {
        println!("(more entries: raise --limit or narrow --prefix)");
    }
    Ok(())
}

pub fn dlq_list(
    client: &Client,
    plugin: Option<&str>,
    limit: Option<usize>,
    json_out: bool,
) -> anyhow::Result<()> {
    let mut query = Vec::new();
    if let Some(p) = plugin {
        query.push(format!("plugin={}", encode(p)));
    }
    if let Some(l) = limit {
        query.push(format!("limit={l}"));
    }
    let answer = client.get(&format!("/v1/dlq?{}", query.join("&")))?;
    if json_out {
        print_json(&answer.body);
        return Ok(());
    }
    let list = answer.body["dead_letters"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if list.is_empty() {
        println!("no dead letters");
        return Ok(());
    }
    let mut t = Table::new(&[
        "ID",
        "PLUGIN",
        "VERSION",
        "KIND",
        "ATTEMPTS",
        "EVENT",
        "TYPE",
        "LAST FAILURE",
        "MESSAGE",
    ]);
    for d in &list {
        t.row(vec![
            d["id"].to_string(),
            d["plugin"].as_str().unwrap_or("").to_owned(),
            d["plugin_version"].as_str().unwrap_or("").to_owned(),
            d["error_kind"].as_str().unwrap_or("").to_owned(),
            d["attempts"].to_string(),
            d["event"]["id"].as_str().unwrap_or("").to_owned(),
            d["event"]["type"].as_str().unwrap_or("").to_owned(),
            d["last_failure"].as_str().unwrap_or("").to_owned(),
            clip(d["message"].as_str().unwrap_or(""), 80),
        ]);
    }
    print!("{}", t.render());
    Ok(())
}

pub fn dlq_show(client: &Client, id: u64, json_out: bool) -> anyhow::Result<()> {
    let answer = client.get(&format!("/v1/dlq/{id}"))?;
    if json_out {
        print_json(&answer.body);
        return Ok(());
    }
    let d = &answer.body;
    for key in [
        "id",
        "plugin",
        "plugin_version",
        "error_kind",
        "message",
        "attempts",
        "first_failure",
        "last_failure",
        "group",
    ] {
        let v = match &d[key] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        println!("{key:<15} {v}");
    }
    println!("event:");
    print_json(&d["event"]);
    Ok(())
}

pub fn dlq_replay(
    client: &Client,
    id: Option<u64>,
    plugin: Option<&str>,
    json_out: bool,
) -> anyhow::Result<()> {
    let answer = match (id, plugin) {
        (Some(id), None) => client.post_empty(&format!("/v1/dlq/{id}/replay"))?,
        (None, Some(p)) => client.post_empty(&format!("/v1/dlq/replay?plugin={}", encode(p)))?,
        _ => bail!("give a dead letter ID or --plugin NAME"),
    };
    if json_out {
        print_json(&answer.body);
        return Ok(());
    }
    let b = &answer.body;
    match id {
        Some(id) => match b["outcome"].as_str() {
            Some("succeeded") => println!("dead letter {id} replayed: handled"),
            _ => println!(
                "dead letter {id} failed again (now dead letter {}): {}",
                b["new_id"],
                b["message"].as_str().unwrap_or("")
            ),
        },
        None => println!(
            "replayed dead letters of {}: {} handled, {} failed again",
            b["plugin"].as_str().unwrap_or(""),
            b["succeeded"],
            b["failed"]
        ),
    }
    Ok(())
}

/// Deletes the given dead letters, or every one of `plugin`, or all.
pub fn dlq_purge(
    client: &Client,
    ids: &[u64],
    plugin: Option<&str>,
    all: bool,
    json_out: bool,
) -> anyhow::Result<()> {
    let mut targets: Vec<u64> = ids.to_vec();
    if plugin.is_some() || all {
        if !ids.is_empty() {
            bail!("give dead letter IDs, or --plugin NAME, or --all; not both");
        }
        let mut after: Option<u64> = None;
        loop {
            let mut query = vec!["limit=1000".to_owned()];
            if let Some(p) = plugin {
                query.push(format!("plugin={}", encode(p)));
            }
            if let Some(a) = after {
                query.push(format!("after={a}"));
            }
            let page = client.get(&format!("/v1/dlq?{}", query.join("&")))?;
            let list = page.body["dead_letters"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let Some(last) = list.last().and_then(|d| d["id"].as_u64()) else {
                break;
            };
            targets.extend(list.iter().filter_map(|d| d["id"].as_u64()));
            after = Some(last);
        }
    } else if ids.is_empty() {
        bail!("give dead letter IDs, or --plugin NAME, or --all");
    }
    let mut deleted = 0usize;
    for id in &targets {
        match client.delete(&format!("/v1/dlq/{id}")) {
            Ok(_) => deleted += 1,
            // Someone else removed it meanwhile (a replay that succeeded): nothing to do.
            Err(e) if e.status() == Some(404) && (plugin.is_some() || all) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if json_out {
        print_json(&json!({ "deleted": deleted }));
    } else {
        println!("deleted {deleted} dead letter(s)");
    }
    Ok(())
}

pub fn status(client: &Client, json_out: bool) -> anyhow::Result<()> {
    let health = client.get("/healthz")?;
    let topics = client.get("/v1/topics")?;
    let plugins = client.get("/v1/plugins")?;
    if json_out {
        print_json(&json!({
            "server": client.server(),
            "health": health.body,
            "topics": topics.body["topics"],
            "plugins": plugins.body["plugins"],
        }));
        return Ok(());
    }
    println!(
        "evhost at {}: {}",
        client.server(),
        health.body["status"].as_str().unwrap_or("?")
    );
    let mut t = Table::new(&["TOPIC", "PARTITION", "START", "END"]);
    for topic in topics.body["topics"].as_array().into_iter().flatten() {
        for p in topic["partitions"].as_array().into_iter().flatten() {
            t.row(vec![
                topic["name"].as_str().unwrap_or("").to_owned(),
                p["partition"].to_string(),
                p["start_offset"].to_string(),
                p["end_offset"].to_string(),
            ]);
        }
    }
    println!();
    if t.is_empty() {
        println!("no topics yet");
    } else {
        print!("{}", t.render());
    }
    println!();
    print_plugins(&plugins.body);
    Ok(())
}

pub fn schema_put(
    client: &Client,
    ty: &str,
    version: &str,
    file: &std::path::Path,
    json_out: bool,
) -> anyhow::Result<()> {
    let bytes = if file.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("cannot read stdin")?;
        buf
    } else {
        std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?
    };
    let answer = client.put_json(
        &format!("/v1/schemas/{}/{}", encode(ty), encode(version)),
        &bytes,
    )?;
    if json_out {
        print_json(&answer.body);
    } else if answer.body["created"] == true {
        println!("registered schema {ty} version {version}");
    } else {
        println!("schema {ty} version {version} was already registered (unchanged)");
    }
    Ok(())
}

pub fn schema_list(client: &Client, json_out: bool) -> anyhow::Result<()> {
    let answer = client.get("/v1/schemas")?;
    if json_out {
        print_json(&answer.body);
        return Ok(());
    }
    let list = answer.body["schemas"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if list.is_empty() {
        println!("no schemas registered");
        return Ok(());
    }
    let mut t = Table::new(&["TYPE", "VERSION", "REGISTERED"]);
    for s in &list {
        t.row(vec![
            s["type"].as_str().unwrap_or("").to_owned(),
            s["version"].as_str().unwrap_or("").to_owned(),
            s["registered_at"].as_str().unwrap_or("").to_owned(),
        ]);
    }
    print!("{}", t.render());
    Ok(())
}
