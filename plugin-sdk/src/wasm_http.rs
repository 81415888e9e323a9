//! [`Context::http`](crate::Context::http) inside a component: one
//! `wasi:http/outgoing-handler` request, written and read to the end.

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
};
use wasip2::io::streams::StreamError;

use crate::{HttpError, HttpRequest, HttpResponse};

/// Bytes per write: `blocking-write-and-flush` takes at most 4096.
const CHUNK: usize = 4096;
/// Bytes asked for per read.
const READ: u64 = 64 << 10;

pub fn send(request: &HttpRequest) -> Result<HttpResponse, HttpError> {
    let (scheme, authority, path) = split_url(&request.url)?;
    let mut entries: Vec<(String, Vec<u8>)> = request
        .headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.as_bytes().to_vec()))
        .collect();
    // A known length instead of chunked encoding: simplest for any server.
    if let Some(body) = &request.body
        && request.header_value("content-length").is_none()
    {
        entries.push(("content-length".into(), body.len().to_string().into_bytes()));
    }
    let headers = Fields::from_list(&entries)
        .map_err(|e| HttpError::failed(format!("invalid request headers: {e:?}")))?;
    let out = OutgoingRequest::new(headers);
    let invalid = |what: &str| HttpError::failed(format!("invalid request {what}"));
    out.set_method(&method(&request.method))
        .map_err(|()| invalid("method"))?;
    out.set_scheme(Some(&scheme))
        .map_err(|()| invalid("scheme"))?;
    out.set_authority(Some(authority))
        .map_err(|()| invalid("host"))?;
    out.set_path_with_query(Some(path))
        .map_err(|()| invalid("path"))?;
    let body = out.body().map_err(|()| invalid("body"))?;
    let pending = outgoing_handler::handle(out, None).map_err(error)?;
    if let Some(bytes) = &request.body {
        let stream = body.write().map_err(|()| invalid("body"))?;
        for chunk in bytes.chunks(CHUNK) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(stream_error)?;
        }
    }
    OutgoingBody::finish(body, None).map_err(error)?;
    let response = loop {
        match pending.get() {
            Some(result) => break result,
            None => pending.subscribe().block(),
        }
    };
    let response = response
        .map_err(|()| HttpError::failed("the response was already taken"))?
        .map_err(error)?;
    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .map(|(n, v)| (n, String::from_utf8_lossy(&v).into_owned()))
        .collect();
    let incoming = response
        .consume()
        .map_err(|()| HttpError::failed("the response body was already taken"))?;
    let mut bytes = Vec::new();
    {
        let stream = incoming
            .stream()
            .map_err(|()| HttpError::failed("the response body was already taken"))?;
        loop {
            match stream.blocking_read(READ) {
                Ok(chunk) => bytes.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(e) => return Err(stream_error(e)),
            }
        }
    }
    drop(IncomingBody::finish(incoming));
    Ok(HttpResponse {
        status,
        headers,
        body: bytes,
    })
}

fn split_url(url: &str) -> Result<(Scheme, &str, &str), HttpError> {
    let bad = || HttpError::failed(format!("invalid URL {url:?}: expected http(s)://host/path"));
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        _ => return Err(bad()),
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.is_empty() {
        return Err(bad());
    }
    let path = if path.is_empty() { "/" } else { path };
    Ok((scheme, authority, path))
}

fn method(m: &str) -> Method {
    match m.to_ascii_uppercase().as_str() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "OPTIONS" => Method::Options,
        "PATCH" => Method::Patch,
        other => Method::Other(other.to_owned()),
    }
}

/// The host refuses with `internal-error` carrying its message (a grant or
/// a limit, see the WIT docs) or a body-size error; anything else happened on
/// the way to the server.
fn error(code: ErrorCode) -> HttpError {
    match code {
        ErrorCode::InternalError(Some(message)) => HttpError::refused(message),
        ErrorCode::HttpRequestBodySize(limit) => HttpError::refused(format!(
            "the request body is over the call's limit ({} bytes)",
            limit.unwrap_or(0)
        )),
        ErrorCode::HttpResponseBodySize(limit) => HttpError::refused(format!(
            "the response body is over the call's limit ({} bytes)",
            limit.unwrap_or(0)
        )),
        other => HttpError::failed(format!("{other}")),
    }
}

fn stream_error(e: StreamError) -> HttpError {
    match e {
        StreamError::Closed => HttpError::failed("the connection closed"),
        StreamError::LastOperationFailed(e) => match wasip2::http::types::http_error_code(&e) {
            Some(code) => error(code),
            None => {
                // The host's text, without the backtrace it may carry.
                let text = e.to_debug_string();
                let first = text.lines().next().unwrap_or_default().to_owned();
                // A body over the call's byte cap is the host's limit.
                if first.contains("size exceeds limit") {
                    HttpError::refused(first)
                } else {
                    HttpError::failed(first)
                }
            }
        },
    }
}
