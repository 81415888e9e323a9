//! The one naming rule for plugins, shared by the [`plugin!`](crate::plugin)
//! macro (at compile time), `evhost new`, `evhost build` and the host's loader.
//! A plugin's name keys its consumer group, its state namespace, its dead
//! letters and its files (`NAME.wasm`, `NAME.toml`), so it is kept to
//! characters that are safe in all of them.

use std::fmt;

/// The rule, in words, as every error states it.
///
/// ```
/// assert!(evhost_sdk::NAME_RULE.contains("lowercase"));
/// ```
pub const NAME_RULE: &str =
    "1 to 64 lowercase ASCII letters, digits or '-', starting with a letter";

/// Longest valid name, in bytes.
const MAX_LEN: usize = 64;

/// Whether `name` follows [`NAME_RULE`]. A `const fn`, so that
/// [`plugin!`](crate::plugin) refuses a bad name when the plugin compiles.
///
/// ```
/// use evhost_sdk::is_valid_name;
/// assert!(is_valid_name("invoice-ledger") && is_valid_name("v2"));
/// assert!(!is_valid_name("Invoice_Ledger") && !is_valid_name("2fa") && !is_valid_name(""));
/// ```
pub const fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_LEN || !bytes[0].is_ascii_lowercase() {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !(b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return false;
        }
        i += 1;
    }
    true
}

/// A plugin name that breaks [`NAME_RULE`], with a valid one to use instead
/// when one can be derived.
///
/// ```
/// let err = evhost_sdk::check_name("Invoice_Ledger").unwrap_err();
/// assert_eq!(err.suggestion(), Some("invoice-ledger"));
/// assert!(err.to_string().contains("try \"invoice-ledger\""));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameError {
    name: String,
    suggestion: Option<String>,
}

impl NameError {
    /// The refused name.
    ///
    /// ```
    /// assert_eq!(evhost_sdk::check_name("A").unwrap_err().name(), "A");
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A valid name close to the refused one, if any.
    ///
    /// ```
    /// assert_eq!(evhost_sdk::check_name("--").unwrap_err().suggestion(), None);
    /// ```
    pub fn suggestion(&self) -> Option<&str> {
        self.suggestion.as_deref()
    }
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "plugin name {:?} is invalid: a name is {NAME_RULE}",
            self.name
        )?;
        match &self.suggestion {
            Some(s) => write!(f, "; try {s:?}"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for NameError {}

/// Checks `name` against [`NAME_RULE`]; the error suggests a valid name.
///
/// ```
/// assert!(evhost_sdk::check_name("welcome").is_ok());
/// assert!(evhost_sdk::check_name("Welcome").is_err());
/// ```
pub fn check_name(name: &str) -> Result<(), NameError> {
    if is_valid_name(name) {
        return Ok(());
    }
    Err(NameError {
        name: name.to_owned(),
        suggestion: suggest_name(name),
    })
}

/// A valid name derived from `name`: lowercased, every run of other
/// characters (`_`, spaces, dots...) turned into one `-`, leading characters
/// that are not letters dropped, cut to 64 bytes. `None` when nothing is left.
///
/// ```
/// use evhost_sdk::suggest_name;
/// assert_eq!(suggest_name("Invoice_Ledger").as_deref(), Some("invoice-ledger"));
/// assert_eq!(suggest_name("2FA check").as_deref(), Some("fa-check"));
/// assert_eq!(suggest_name("__").as_deref(), None);
/// ```
pub fn suggest_name(name: &str) -> Option<String> {
    let mut out = String::new();
    let mut dash = false;
    for c in name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || (c.is_ascii_digit() && !out.is_empty()) {
            if dash && !out.is_empty() {
                out.push('-');
            }
            dash = false;
            out.push(c);
        } else if c.is_ascii_digit() {
            // A leading digit cannot start a name: dropped.
        } else {
            dash = true;
        }
    }
    out.truncate(MAX_LEN);
    let out = out.trim_end_matches('-').to_owned();
    is_valid_name(&out).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_accepts_and_refuses_what_it_says() {
        for good in ["a", "order-saga2", "x-", &"a".repeat(64)] {
            assert!(is_valid_name(good), "{good:?} refused");
        }
        for bad in ["", "Order", "a/b", "-x", "9x", "a_b", "é", &"a".repeat(65)] {
            assert!(!is_valid_name(bad), "{bad:?} accepted");
        }
    }

    #[test]
    fn suggestions_are_valid_and_close() {
        for (given, want) in [
            ("Invoice_Ledger", Some("invoice-ledger")),
            ("my plugin!", Some("my-plugin")),
            ("a__b", Some("a-b")),
            ("_lead", Some("lead")),
            ("123", None),
        ] {
            assert_eq!(suggest_name(given).as_deref(), want, "{given}");
        }
        let long = suggest_name(&"A".repeat(100)).unwrap();
        assert!(is_valid_name(&long) && long.len() == 64);
    }
}
