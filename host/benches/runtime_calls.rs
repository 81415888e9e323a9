//! Per-call cost of the Wasm boundary: `handle` on a live instance, and a fresh
//! instantiation + `handle`, for a handler that returns at once
//! (`faulty.done`). Also component load times, cold and from the cache.
//! The measurement itself lives in `common/calls.rs`, shared with the full
//! benchmark (`--bench suite`).
//!
//! Run: `cargo bench -p evhost --bench runtime_calls` (add `-- --calls N` to
//! change the number of live calls; default 200000, fresh calls a tenth).

#[path = "../../tests/support/mod.rs"]
mod support;

mod common;

use common::calls;

fn main() {
    let calls: usize = std::env::args()
        .skip_while(|a| a != "--calls")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(200_000);
    let fresh_calls = (calls / 10).max(1000);
    let c = calls::measure(&support::plugin("faulty"), calls, fresh_calls);

    println!("faulty.wasm: {} bytes", c.component_bytes);
    println!("| what | median | p99 | n |");
    println!("| --- | --- | --- | --- |");
    let rows = [
        ("load, compile (cold)", &c.load_compiled),
        ("load, from cache", &c.load_cached),
        ("handle on a live instance", &c.live),
        ("fresh instantiate + handle + drop", &c.fresh),
    ];
    for (what, s) in rows {
        println!(
            "| {what} | {} | {} | {} |",
            calls::us(s.pct(0.5)),
            calls::us(s.pct(0.99)),
            s.len()
        );
    }
}
