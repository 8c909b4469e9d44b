//! The web console (`/console`, `docs/console.md`): one HTML page, a
//! script and a style sheet, built into the binary, nothing loaded from
//! anywhere else. The page is a client of the `/v1` routes like any
//! other: it holds no data, so it is served to anyone, and what it shows
//! is what the caller's token may read (it asks for one when the node
//! has `[security]`).
//!
//! Its script writes every value into the page as text, never as HTML,
//! and the answers forbid inline scripts and any other origin
//! (`Content-Security-Policy`), so a payload or a flow name cannot run
//! in an operator's browser.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

const PAGE: &str = include_str!("index.html");

/// The assets under `/console/assets/`, by name: their type and text.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("console.js"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("console.css"),
    ),
];

/// Only this page's own script, styles and requests; no frames.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

fn served(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `GET /console`: the page (every view of it: the script routes by the
/// address's `#` part).
pub(super) async fn page() -> Response {
    served("text/html; charset=utf-8", PAGE)
}

/// `GET /console/assets/{file}`.
pub(super) async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => served(content_type, body),
        None => ApiError::http(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("the console has no asset {file:?}"),
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_assets_and_no_inline_script() {
        for (name, _, _) in ASSETS {
            assert!(
                PAGE.contains(&format!("/console/assets/{name}")),
                "the page links {name}"
            );
        }
        let lower = PAGE.to_lowercase();
        assert!(
            !lower.contains("http://") && !lower.contains("https://"),
            "nothing from elsewhere"
        );
        for (at, _) in lower.match_indices("<script") {
            let tag = &lower[at..at + lower[at..].find('>').expect("a closed tag")];
            assert!(tag.contains("src="), "an inline script: {tag}");
        }
        for (at, _) in lower.match_indices(" on") {
            let name: String = lower[at + 1..]
                .chars()
                .take_while(char::is_ascii_alphabetic)
                .collect();
            let after = &lower[at + 1 + name.len()..];
            assert!(!after.starts_with('='), "an inline handler: {name}");
        }
    }

    #[test]
    fn the_script_writes_text_never_html() {
        let script = ASSETS[0].2;
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!script.contains(sink), "console.js uses {sink}");
        }
    }
}
