//! The parts of an operator's sidecar (`NAME.toml`) that a plugin's tests
//! need as much as the daemon: the capability grants (`[grants]`) and how
//! they are enforced, and the `[config]` values. The one definition shared by
//! the daemon and by
//! [`TestHost::with_sidecar`](crate::testing::TestHost::with_sidecar), so a
//! test refuses exactly what the daemon refuses, with the same words, and
//! reads the same config. Native targets only (the host side).

use std::collections::BTreeMap;
use std::fmt;

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Deserialize;

/// The `[grants]` table of a sidecar. Unknown keys are refused by name.
///
/// ```
/// let grants = evhost_sdk::sidecar::sidecar_grants("[grants]\nemit = [\"a.*\"]\n").unwrap();
/// assert_eq!(grants.emit, ["a.*"]);
/// assert!(!grants.state);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantsSpec {
    /// Event-type globs the plugin may emit.
    #[serde(default)]
    pub emit: Vec<String>,
    /// May use the `state` interface.
    #[serde(default)]
    pub state: bool,
    /// URLs `wasi:http` may request: `scheme://host[:port][/path[*]]` (checked by the
    /// host, which owns the allowlist).
    #[serde(default)]
    pub http: Vec<String>,
}

/// Reads only the `[grants]` table of a sidecar's text (the daemon parses
/// the whole file; the other keys do not matter to grants).
///
/// ```
/// let grants = evhost_sdk::sidecar::sidecar_grants("timeout = \"1s\"\n[grants]\nstate = true\n").unwrap();
/// assert!(grants.state && grants.emit.is_empty());
/// assert!(evhost_sdk::sidecar::sidecar_grants("[grants]\nemitt = []").unwrap_err().contains("emitt"));
/// ```
pub fn sidecar_grants(text: &str) -> Result<GrantsSpec, String> {
    Ok(parse(text)?.0)
}

/// Reads only the `[config]` table of a sidecar's text, as the plugin sees
/// it: every value a string (see [`config_value`]).
///
/// ```
/// let config = evhost_sdk::sidecar::sidecar_config("[config]\ngreeting = \"Hej\"\ntimes = 3\n").unwrap();
/// assert_eq!(config["greeting"], "Hej");
/// assert_eq!(config["times"], "3");
/// ```
pub fn sidecar_config(text: &str) -> Result<BTreeMap<String, String>, String> {
    Ok(parse(text)?.1)
}

fn parse(text: &str) -> Result<(GrantsSpec, BTreeMap<String, String>), String> {
    let mut table: toml::Table =
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())?;
    let grants: GrantsSpec = match table.remove("grants") {
        None => GrantsSpec::default(),
        Some(value) => value
            .try_into()
            .map_err(|e: toml::de::Error| format!("grants: {}", e.to_string().trim_end()))?,
    };
    EmitGrant::new(grants.emit.clone()).map_err(|e| format!("grants.emit: {e}"))?;
    let config = match table.remove("config") {
        None => BTreeMap::new(),
        Some(toml::Value::Table(t)) => t
            .iter()
            .map(|(k, v)| {
                let value = config_value(v).map_err(|e| format!("config.{k}: {e}"))?;
                Ok((k.clone(), value))
            })
            .collect::<Result<_, String>>()?,
        Some(_) => return Err("config: expected a table".into()),
    };
    Ok((grants, config))
}

/// A `[config]` value as the plugin reads it: plugins read config values as
/// strings, so scalars written the TOML way are converted; arrays and tables
/// are refused.
///
/// ```
/// use evhost_sdk::sidecar::config_value;
/// assert_eq!(config_value(&toml::Value::Boolean(true)).unwrap(), "true");
/// assert!(config_value(&toml::Value::Array(vec![])).is_err());
/// ```
pub fn config_value(value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Datetime(d) => Ok(d.to_string()),
        toml::Value::Array(_) | toml::Value::Table(_) => {
            Err("values must be strings, numbers or booleans".into())
        }
    }
}

/// An emit pattern that is not a valid glob.
///
/// ```
/// let err = evhost_sdk::sidecar::EmitGrant::new(vec!["a[".into()]).unwrap_err();
/// assert!(err.to_string().contains("a["));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    pattern: String,
    message: String,
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pattern {:?} is invalid: {}", self.pattern, self.message)
    }
}

impl std::error::Error for PatternError {}

/// The event types a plugin may emit: a set of globs (`*`, `?`, `[a-z]`,
/// `{a,b}`); none matches nothing.
///
/// ```
/// let grant = evhost_sdk::sidecar::EmitGrant::new(vec!["invoice.*".into()]).unwrap();
/// assert!(grant.allows("invoice.created") && !grant.allows("order.created"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct EmitGrant {
    patterns: Vec<String>,
    set: Option<GlobSet>,
}

impl EmitGrant {
    /// Compiles the patterns.
    ///
    /// ```
    /// assert!(!evhost_sdk::sidecar::EmitGrant::new(vec![]).unwrap().allows("a.b"));
    /// ```
    pub fn new(patterns: Vec<String>) -> Result<Self, PatternError> {
        if patterns.is_empty() {
            return Ok(EmitGrant::default());
        }
        let mut set = GlobSetBuilder::new();
        for p in &patterns {
            set.add(Glob::new(p).map_err(|e| PatternError {
                pattern: p.clone(),
                message: e.kind().to_string(),
            })?);
        }
        let set = set.build().map_err(|e| PatternError {
            pattern: patterns.join(", "),
            message: e.to_string(),
        })?;
        Ok(EmitGrant {
            patterns,
            set: Some(set),
        })
    }

    /// Whether an event of type `ty` may be emitted.
    ///
    /// ```
    /// let all = evhost_sdk::sidecar::EmitGrant::new(vec!["*".into()]).unwrap();
    /// assert!(all.allows("anything.at-all"));
    /// ```
    pub fn allows(&self, ty: &str) -> bool {
        self.set.as_ref().is_some_and(|set| set.is_match(ty))
    }

    /// The patterns as given.
    ///
    /// ```
    /// let grant = evhost_sdk::sidecar::EmitGrant::new(vec!["a.*".into()]).unwrap();
    /// assert_eq!(grant.patterns(), ["a.*"]);
    /// ```
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Why an emit of `ty` is refused; `how` (may be empty) tells how to
    /// grant it and is appended after "; ".
    ///
    /// ```
    /// let none = evhost_sdk::sidecar::EmitGrant::default();
    /// assert_eq!(none.refusal("p", "a.b", ""), "plugin `p` may not emit type `a.b`: it has no `emit` grant");
    /// ```
    pub fn refusal(&self, plugin: &str, ty: &str, how: &str) -> String {
        let has = if self.patterns.is_empty() {
            "it has no `emit` grant".to_owned()
        } else {
            format!("its `emit` grant allows {}", self.patterns.join(", "))
        };
        format!(
            "plugin `{plugin}` may not emit type `{ty}`: {has}{}",
            suffix(how)
        )
    }
}

/// What an operator writes in the sidecar to grant an emit of `ty`.
///
/// ```
/// assert!(evhost_sdk::sidecar::emit_edit("a.b").contains("\"a.b\""));
/// ```
pub fn emit_edit(ty: &str) -> String {
    format!("add \"{ty}\" (or a pattern matching it) to emit under [grants]")
}

/// What an operator writes in the sidecar to grant `state`.
///
/// ```
/// assert!(evhost_sdk::sidecar::STATE_EDIT.contains("state = true"));
/// ```
pub const STATE_EDIT: &str = "add \"state = true\" under [grants]";

/// Why a `state` access is refused; `how` as in [`EmitGrant::refusal`].
///
/// ```
/// assert_eq!(evhost_sdk::sidecar::state_refusal("p", ""), "plugin `p` has no `state` grant");
/// ```
pub fn state_refusal(plugin: &str, how: &str) -> String {
    format!("plugin `{plugin}` has no `state` grant{}", suffix(how))
}

fn suffix(how: &str) -> String {
    if how.is_empty() {
        String::new()
    } else {
        format!("; {how}")
    }
}
