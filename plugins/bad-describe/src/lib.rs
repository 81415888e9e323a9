//! `bad-describe`: a plugin whose `describe()` panics, so the host's tests can
//! prove that a load failure carries the guest's own message (its stderr)
//! rather than only the trap ("wasm 'unreachable' instruction executed").
//!
//! The panic message is [`PANIC_MESSAGE`]; `handle` is never reached.

use evhost_sdk::prelude::*;

evhost_sdk::plugin!(
    name = "bad-describe",
    version = version(),
    subscribe = [("bad-events", "bad.*")],
    handler = handle,
);

/// What `describe()` panics with; distinctive, so a test can look for it.
pub const PANIC_MESSAGE: &str = "bad-describe: no plugin info today (deliberate panic in describe)";

/// The plugin's version, as `describe()` asks for it: panics. (Not the
/// name: `plugin!` checks a name when the plugin compiles, so it is a constant.)
fn version() -> &'static str {
    panic!("{PANIC_MESSAGE}")
}

fn handle(_event: &Event, _cx: &mut Context) -> Result<(), HandlerError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    #[should_panic(expected = "deliberate panic in describe")]
    fn describe_panics_with_its_message() {
        super::describe();
    }
}
