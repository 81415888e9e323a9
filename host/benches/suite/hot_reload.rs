//! Hot-reload latency, measured by the reload benchmark (`benches/reload.rs`,
//! owned with the hot-reload work): this runs it as it stands, through cargo,
//! and reads its table, so there is one implementation of the measurement.

use std::process::Command;

use serde_json::{Value, json};

pub fn run(swaps: usize) -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(crate::support::workspace_root())
        .args([
            "bench", "-q", "-p", "evhost", "--bench", "reload", "--", "--swaps",
        ])
        .arg(swaps.to_string())
        .stderr(std::process::Stdio::inherit())
        .output();
    let out = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        Ok(o) => {
            return json!({"todo": format!("the reload benchmark failed ({})", o.status),
                          "output": String::from_utf8_lossy(&o.stdout)});
        }
        Err(e) => return json!({"todo": format!("cannot run cargo: {e}")}),
    };
    let mut rows = Vec::new();
    for line in out.lines() {
        let label = ["new (compiled)", "in the precompiled cache"]
            .into_iter()
            .find(|l| line.contains(l));
        let Some(label) = label else { continue };
        let (debounce, rest) = line.split_once(label).expect("label found");
        // "123.4 ms  100.2 ms  150.0 ms  0/20": median, min, max, cache hits/misses.
        let tokens: Vec<&str> = rest.split_whitespace().collect();
        let ms: Vec<f64> = tokens
            .windows(2)
            .filter(|w| w[1] == "ms")
            .filter_map(|w| w[0].parse().ok())
            .collect();
        if ms.len() < 3 {
            continue;
        }
        rows.push(json!({
            "debounce": debounce.trim(),
            "component": label,
            "median_ms": ms[0],
            "min_ms": ms[1],
            "max_ms": ms[2],
            "cache_hit_miss": tokens.last(),
        }));
    }
    if rows.is_empty() {
        return json!({"todo": "the reload benchmark printed no rows this harness understands", "output": out});
    }
    json!({"swaps": swaps, "rows": rows})
}
