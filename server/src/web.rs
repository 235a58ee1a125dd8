//! The web page of `cairn serve` (docs/web.md): a shell page and its
//! script and style, embedded in the binary (no CDN, no network, no build
//! step), served at `/` and `/ui/...`.
//!
//! The page is rendered in the browser from the public `/v1` API only
//! (docs/api.md), so everything it shows is also there for scripts. Every
//! `/ui/...` path answers the same shell: the script reads the path and
//! draws that view, so each view's URL can be bookmarked and shared.
//! The assets need no token (they hold no data); the script asks for the
//! token once and sends it with each `/v1` request.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const INDEX_HTML: &str = include_str!("../web/index.html");
const APP_JS: &str = include_str!("../web/app.js");
const APP_CSS: &str = include_str!("../web/app.css");
const FAVICON_SVG: &str = include_str!("../web/favicon.svg");

/// The page's own policy: scripts, styles and requests only from this
/// server, nothing inline, no frames.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The routes of the page, merged into the server's router (whatever its
/// state): `/`, `/ui` and every `/ui/...` view, and the assets.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/ui", get(index))
        .route("/ui/", get(index))
        .route("/ui/{*view}", get(index))
        .route("/ui/assets/app.js", get(app_js))
        .route("/ui/assets/app.css", get(app_css))
        .route("/ui/assets/favicon.svg", get(favicon))
        .route("/favicon.ico", get(favicon))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            // The assets change with the binary only; a restarted server
            // may be a new one, so the browser asks again each time.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

async fn favicon() -> Response {
    asset("image/svg+xml", FAVICON_SVG)
}
