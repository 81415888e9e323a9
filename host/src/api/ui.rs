//! The web console at `/ui`: a few static files compiled into the binary
//! (`include_str!`), no build step, no CDN. The page is plain HTML with
//! vanilla JS modules that call the same `/v1` API as every other client,
//! with the operator's bearer token when one is needed.
//!
//! The files themselves carry no data, so they are served without the token
//! even when reads are protected (a browser cannot add a header to a
//! navigation); everything the page shows comes through the API and its auth.

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// `(path under /ui/, content type, body)`.
const ASSETS: [(&str, &str, &str); 4] = [
    (
        "",
        "text/html; charset=utf-8",
        include_str!("ui/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("ui/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_str!("ui/api.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("ui/style.css"),
    ),
];

/// Whether `path` is one of the console's static files (served without the token).
pub(super) fn is_asset(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/")
}

/// `/ui` (redirected to `/ui/`, so relative links resolve) and its files.
pub(super) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut router = Router::new().route("/ui", get(|| async { Redirect::permanent("/ui/") }));
    for (path, content_type, body) in ASSETS {
        router = router.route(
            &format!("/ui/{path}"),
            get(move || async move { asset(content_type, body) }),
        );
    }
    router
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // The assets change only with the binary; revalidating is cheap on loopback.
            (header::CACHE_CONTROL, "no-cache"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; style-src 'self'; img-src 'self' data:",
            ),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_refer_to_nothing_outside_the_daemon() {
        for (path, _, body) in ASSETS {
            for remote in ["http://", "https://", "//cdn", "@import url("] {
                assert!(!body.contains(remote), "ui/{path} refers to {remote}");
            }
        }
    }

    #[test]
    fn only_ui_paths_are_assets() {
        assert!(is_asset("/ui"));
        assert!(is_asset("/ui/app.js"));
        assert!(!is_asset("/uix"));
        assert!(!is_asset("/v1/plugins"));
    }
}
