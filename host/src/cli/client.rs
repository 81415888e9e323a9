//! A small blocking HTTP client for the daemon's API (ureq, plain HTTP).

use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

use serde_json::Value;

/// Where the daemon is and how to authenticate.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
    streaming: ureq::Agent,
}

/// A failed request, in words a person at a terminal can act on.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the evhost daemon at {server}: is it running? \
         (start it with `evhost run`, or point --server / EVHOST_SERVER at it)"
    )]
    NotRunning { server: String },
    #[error("{status} {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
        body: Value,
    },
    #[error("talking to {server}: {message}")]
    Http { server: String, message: String },
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// An answer: status and body (JSON when it parses, else the text as a string).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Client {
    pub fn new(server: &str, token: Option<String>) -> Client {
        let config = |timeout: Option<Duration>| {
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(timeout)
                .timeout_connect(Some(Duration::from_secs(5)))
                .build()
        };
        Client {
            base: server.trim_end_matches('/').to_owned(),
            token,
            agent: ureq::Agent::new_with_config(config(Some(Duration::from_secs(120)))),
            streaming: ureq::Agent::new_with_config(config(None)),
        }
    }

    pub fn server(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn fail(&self, e: ureq::Error) -> ClientError {
        let refused = match &e {
            ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => true,
            ureq::Error::Io(io) => matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::NotConnected
            ),
            _ => false,
        };
        if refused {
            ClientError::NotRunning {
                server: self.base.clone(),
            }
        } else {
            ClientError::Http {
                server: self.base.clone(),
                message: e.to_string(),
            }
        }
    }

    fn finish(
        &self,
        resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Answer, ClientError> {
        let mut resp = resp.map_err(|e| self.fail(e))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(256 << 20)
            .read_to_string()
            .map_err(|e| self.fail(e))?;
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status >= 400 {
            let code = body["error"]["code"].as_str().unwrap_or("error").to_owned();
            let message = body["error"]["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| body.to_string());
            return Err(ClientError::Api {
                status,
                code,
                message,
                body,
            });
        }
        Ok(Answer { status, body })
    }

    fn auth<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => req.header("Authorization", format!("Bearer {t}")),
            None => req,
        }
    }

    pub fn get(&self, path: &str) -> Result<Answer, ClientError> {
        self.finish(self.auth(self.agent.get(self.url(path))).call())
    }

    pub fn delete(&self, path: &str) -> Result<Answer, ClientError> {
        self.finish(self.auth(self.agent.delete(self.url(path))).call())
    }

    /// POST with a body of `content_type` and extra headers.
    pub fn post(
        &self,
        path: &str,
        content_type: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Result<Answer, ClientError> {
        let mut req = self
            .auth(self.agent.post(self.url(path)))
            .content_type(content_type);
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        self.finish(req.send(body))
    }

    pub fn post_empty(&self, path: &str) -> Result<Answer, ClientError> {
        self.finish(self.auth(self.agent.post(self.url(path))).send_empty())
    }

    pub fn put_json(&self, path: &str, body: &[u8]) -> Result<Answer, ClientError> {
        self.finish(
            self.auth(self.agent.put(self.url(path)))
                .content_type("application/json")
                .send(body),
        )
    }

    /// Opens a server-sent-events stream and calls `on_event` with each event's data
    /// until the stream ends or `on_event` returns `false`.
    pub fn stream(
        &self,
        path: &str,
        mut on_event: impl FnMut(&str) -> bool,
    ) -> Result<(), ClientError> {
        let resp = self
            .auth(self.streaming.get(self.url(path)))
            .header("Accept", "text/event-stream")
            .call()
            .map_err(|e| self.fail(e))?;
        if resp.status().as_u16() >= 400 {
            return self.finish(Ok(resp)).map(drop);
        }
        let reader: Box<dyn Read> = Box::new(resp.into_body().into_reader());
        let mut data = String::new();
        for line in BufReader::new(reader).lines() {
            let line = line.map_err(|e| self.fail(ureq::Error::Io(e)))?;
            if line.is_empty() {
                if !data.is_empty() {
                    if !on_event(&data) {
                        return Ok(());
                    }
                    data.clear();
                }
            } else if let Some(d) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(d.strip_prefix(' ').unwrap_or(d));
            }
        }
        Ok(())
    }
}
