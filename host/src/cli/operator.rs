//! `evhost topic create` and `evhost seek`: the operator API from the shell.

use anyhow::Context as _;
use serde_json::{Value, json};

use super::{Client, encode, print_json};

/// What `evhost topic create` sends.
#[derive(Debug, Clone)]
pub struct TopicCreate {
    pub name: String,
    pub partitions: u32,
    /// Seconds; `None` keeps the daemon's default retention.
    pub max_age_seconds: Option<u64>,
    pub max_partition_bytes: Option<u64>,
}

pub fn topic_create(client: &Client, req: TopicCreate, json_out: bool) -> anyhow::Result<()> {
    let mut body = json!({ "name": req.name, "partitions": req.partitions });
    if req.max_age_seconds.is_some() || req.max_partition_bytes.is_some() {
        body["retention"] = json!({
            "max_age_seconds": req.max_age_seconds,
            "max_partition_bytes": req.max_partition_bytes,
        });
    }
    let answer = client.post(
        "/v1/topics",
        "application/json",
        &[],
        body.to_string().as_bytes(),
    )?;
    if json_out {
        print_json(&answer.body);
        return Ok(());
    }
    let t = &answer.body;
    println!(
        "topic {} {} with {} partition(s){}",
        t["name"].as_str().unwrap_or("?"),
        if answer.status == 201 {
            "created"
        } else {
            "exists"
        },
        t["partition_count"],
        retention_text(&t["retention"])
    );
    Ok(())
}

fn retention_text(r: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(s) = r["max_age_seconds"].as_u64() {
        parts.push(format!(
            "max age {}",
            humantime::format_duration(std::time::Duration::from_secs(s))
        ));
    }
    if let Some(b) = r["max_partition_bytes"].as_u64() {
        parts.push(format!("max {b} bytes per partition"));
    }
    if parts.is_empty() {
        ", kept forever".into()
    } else {
        format!(", retention: {}", parts.join(", "))
    }
}

pub fn seek(
    client: &Client,
    plugin: &str,
    topic: &str,
    partition: u32,
    offset: u64,
    json_out: bool,
) -> anyhow::Result<()> {
    let body = json!({ "topic": topic, "partition": partition, "offset": offset });
    let answer = client
        .post(
            &format!("/v1/plugins/{}/offsets", encode(plugin)),
            "application/json",
            &[],
            body.to_string().as_bytes(),
        )
        .with_context(|| format!("seek of {plugin} on {topic}/{partition}"))?;
    if json_out {
        print_json(&answer.body);
        return Ok(());
    }
    println!(
        "{plugin} on {topic}/{partition}: offset {} -> {}",
        answer.body["previous_offset"], answer.body["offset"]
    );
    Ok(())
}
