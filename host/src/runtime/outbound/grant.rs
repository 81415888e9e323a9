//! The operator's `http` grant: the allowlist of URLs a plugin may request,
//! and the per-call limits on its outbound HTTP.
//!
//! An entry is `scheme://host[:port][/path]`: the scheme (`http` or `https`)
//! and the host are required, the port defaults to the scheme's, and a path
//! restricts requests to that path (`/v1/charge`) or, ending in `*`, to a
//! prefix (`/v1/*`). A host matches only as written; `*.example.com` (written
//! by the operator) matches its subdomains. No entry, no request.

use std::time::Duration;

/// One allowlist entry, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpRule {
    /// As the operator wrote it, for messages.
    text: String,
    https: bool,
    host: HostPattern,
    port: u16,
    /// Whether the operator wrote the port: only such an entry can allow the
    /// daemon's own address.
    explicit_port: bool,
    path: Option<PathRule>,
}

#[derive(Debug, Clone, PartialEq)]
enum HostPattern {
    Exact(String),
    /// `*.example.com`, stored as `.example.com`.
    Subdomains(String),
}

#[derive(Debug, Clone, PartialEq)]
enum PathRule {
    /// `/v1/*`: any path starting with `/v1/`.
    Prefix(String),
    /// `/v1/charge`: that path only.
    Exact(String),
}

/// Per-call caps on a plugin's outbound HTTP (the sidecar's `[http]` table).
#[derive(Debug, Clone, PartialEq)]
pub struct HttpLimits {
    /// Most requests one call may start.
    pub requests: u32,
    /// Most request-body bytes one call may send, over all its requests.
    pub request_bytes: u64,
    /// Most response-body bytes one call may receive, over all its requests.
    pub response_bytes: u64,
    /// Longest one request may take, connect to last body byte; never more
    /// than what is left of the call's own timeout.
    pub timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            requests: 16,
            request_bytes: 1 << 20,
            response_bytes: 4 << 20,
            timeout: Duration::from_secs(30),
        }
    }
}

/// The `http` grant: the allowlist and the limits. The default allows
/// nothing, so a plugin that imports `wasi:http` loads but every request it
/// makes is refused.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HttpGrant {
    rules: Vec<HttpRule>,
    pub limits: HttpLimits,
}

/// A request's destination, as the allowlist sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub https: bool,
    /// Lowercase; an IPv6 literal keeps its brackets.
    pub host: String,
    pub port: u16,
    /// Without the query.
    pub path: String,
}

impl HttpGrant {
    /// Parses `allow` (the sidecar's `grants.http`); the error names the entry.
    pub fn new(allow: &[String], limits: HttpLimits) -> Result<Self, String> {
        let rules = allow
            .iter()
            .map(|text| HttpRule::parse(text).map_err(|e| format!("{text:?}: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(HttpGrant { rules, limits })
    }

    /// Whether the allowlist is empty (no request can be made).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The entries as written, comma-separated, for messages.
    pub fn describe(&self) -> String {
        let texts: Vec<&str> = self.rules.iter().map(|r| r.text.as_str()).collect();
        texts.join(", ")
    }

    /// The first entry that allows `target`.
    pub fn allows(&self, target: &Target) -> Option<&HttpRule> {
        self.rules.iter().find(|r| r.matches(target))
    }
}

impl HttpRule {
    fn parse(text: &str) -> Result<Self, String> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or("expected scheme://host[:port][/path]")?;
        let https = match scheme.to_ascii_lowercase().as_str() {
            "http" => false,
            "https" => true,
            other => return Err(format!("scheme {other:?} is not http or https")),
        };
        if rest.contains(['?', '#', '@']) {
            return Err("no query, fragment or user name is allowed".into());
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(&rest[i..])),
            None => (rest, None),
        };
        let (host, port) = split_authority(authority)?;
        let host = host.to_ascii_lowercase();
        let pattern = match host.strip_prefix("*.") {
            Some(domain) if !domain.is_empty() && !domain.contains('*') => {
                HostPattern::Subdomains(format!(".{domain}"))
            }
            _ if host.contains('*') => {
                return Err("a wildcard host is written `*.example.com`".into());
            }
            _ => HostPattern::Exact(host),
        };
        let path = match path {
            None | Some("/") | Some("/*") => None,
            Some(p) if p.contains("/..") || p.contains("/./") || p.contains('%') => {
                return Err("the path must be plain (no `..`, `.` or %-escapes)".into());
            }
            Some(p) => match p.strip_suffix('*') {
                Some(prefix) if !prefix.contains('*') => Some(PathRule::Prefix(prefix.to_owned())),
                Some(_) => return Err("`*` may only end the path".into()),
                None if p.contains('*') => return Err("`*` may only end the path".into()),
                None => Some(PathRule::Exact(p.to_owned())),
            },
        };
        Ok(HttpRule {
            text: text.to_owned(),
            https,
            host: pattern,
            port: port.unwrap_or(if https { 443 } else { 80 }),
            explicit_port: port.is_some(),
            path,
        })
    }

    fn matches(&self, target: &Target) -> bool {
        let host = match &self.host {
            HostPattern::Exact(h) => *h == target.host,
            HostPattern::Subdomains(suffix) => target.host.ends_with(suffix.as_str()),
        };
        let path = match &self.path {
            None => true,
            Some(PathRule::Prefix(prefix)) => target.path.starts_with(prefix.as_str()),
            Some(PathRule::Exact(path)) => target.path == *path,
        };
        self.https == target.https && host && self.port == target.port && path
    }

    /// Whether this entry explicitly names an address that may be the
    /// daemon's own: an IP literal or `localhost`, with the port written.
    pub fn names_address(&self, port: u16) -> bool {
        self.explicit_port
            && self.port == port
            && matches!(&self.host, HostPattern::Exact(h)
                if h == "localhost" || h.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok())
    }
}

/// `host[:port]`, with IPv6 literals in brackets.
fn split_authority(authority: &str) -> Result<(&str, Option<u16>), String> {
    let (host, port) = if authority.starts_with('[') {
        match authority.find(']') {
            Some(end) => {
                let port = authority[end + 1..].strip_prefix(':');
                (&authority[..=end], port)
            }
            None => return Err("unclosed `[` in the host".into()),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("the host is missing".into());
    }
    let port = port
        .map(|p| {
            p.parse::<u16>()
                .map_err(|_| format!("port {p:?} is not a number"))
        })
        .transpose()?;
    Ok((host, port))
}

impl Target {
    /// The destination of `uri`; `None` when it has no host.
    pub fn of(uri: &http::Uri) -> Option<Target> {
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let authority = uri.authority()?;
        Some(Target {
            https,
            host: authority.host().to_ascii_lowercase(),
            port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
            path: uri.path().to_owned(),
        })
    }

    /// Whether the path tries to leave a prefix (`..`, `.`, %-escapes), which
    /// a server may resolve differently from the allowlist's plain match.
    pub fn path_is_plain(&self) -> bool {
        !(self.path.contains("/../")
            || self.path.ends_with("/..")
            || self.path.contains("/./")
            || self.path.ends_with("/.")
            || self.path.contains('%'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> Target {
        Target::of(&url.parse().unwrap()).unwrap()
    }

    fn grant(allow: &[&str]) -> HttpGrant {
        let allow: Vec<String> = allow.iter().map(|s| (*s).to_owned()).collect();
        HttpGrant::new(&allow, HttpLimits::default()).unwrap()
    }

    #[test]
    fn scheme_host_port_and_path_prefix_must_all_match() {
        let g = grant(&["https://api.example.com/v1/*", "http://127.0.0.1:9000"]);
        assert!(
            g.allows(&target("https://api.example.com/v1/charge"))
                .is_some()
        );
        assert!(
            g.allows(&target("https://API.example.com:443/v1/x?y=1"))
                .is_some()
        );
        assert!(
            g.allows(&target("https://api.example.com/v2/charge"))
                .is_none()
        );
        assert!(
            g.allows(&target("http://api.example.com/v1/charge"))
                .is_none()
        );
        assert!(
            g.allows(&target("https://api.example.com:8443/v1/x"))
                .is_none()
        );
        assert!(g.allows(&target("https://evil.example.com/v1/x")).is_none());
        assert!(
            g.allows(&target("http://127.0.0.1:9000/anything"))
                .is_some()
        );
        assert!(g.allows(&target("http://127.0.0.1:9001/")).is_none());
        assert!(g.allows(&target("http://localhost:9000/")).is_none());
    }

    #[test]
    fn wildcard_hosts_and_exact_paths_only_as_written() {
        let g = grant(&["https://*.example.com", "http://h/only"]);
        assert!(g.allows(&target("https://a.example.com/")).is_some());
        assert!(g.allows(&target("https://example.com/")).is_none());
        assert!(g.allows(&target("https://a.example.com.evil/")).is_none());
        assert!(g.allows(&target("http://h/only")).is_some());
        assert!(g.allows(&target("http://h/only/more")).is_none());
    }

    #[test]
    fn bad_entries_are_named() {
        for bad in [
            "example.com",
            "ftp://x",
            "http://a*b",
            "http://x:port",
            "http://x/a*/b",
        ] {
            let e = HttpGrant::new(&[bad.to_owned()], HttpLimits::default()).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn only_an_explicit_address_with_its_port_names_the_daemon() {
        let g = grant(&[
            "http://127.0.0.1:7070",
            "http://127.0.0.1",
            "http://svc:7070",
        ]);
        let rules = &g.rules;
        assert!(rules[0].names_address(7070));
        assert!(!rules[1].names_address(80));
        assert!(!rules[2].names_address(7070));
    }

    #[test]
    fn dot_segments_are_not_plain() {
        let t = Target {
            https: false,
            host: "h".into(),
            port: 80,
            path: "/v1/../admin".into(),
        };
        assert!(!t.path_is_plain());
        assert!(target("http://h/v1/ok").path_is_plain());
    }
}
