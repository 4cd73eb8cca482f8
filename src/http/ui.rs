//! `/ui`: the dashboard, three static files compiled into the binary.
//!
//! Owns serving them (`index.html`, `app.js`, `style.css` under
//! `src/http/ui/`) with their content types and the headers that keep the
//! page to itself: a Content-Security-Policy that allows only this origin
//! (so no inline script or style, nothing from elsewhere), `nosniff`, and
//! `no-cache` so a node's upgrade is seen at the next load. The files carry
//! no data; the page reads the node's API (`/cluster/status`, `/metrics`,
//! `/kv/{key}`) like any client, with the operator's token. It must never
//! read anything from disk or the network at run time, nor embed a figure
//! of the node in a file.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpResponse};

const INDEX_HTML: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");
const STYLE_CSS: &str = include_str!("ui/style.css");

/// Everything the page needs comes from this origin; `data:` images for
/// the favicon; never framed (no clickjacking of the sibling buttons).
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'";

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/ui", web::get().to(index))
        .route("/ui/", web::get().to(index_with_slash))
        .route("/ui/app.js", web::get().to(app_js))
        .route("/ui/style.css", web::get().to(style_css));
}

fn file(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, HeaderValue::from_static(content_type)))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ))
        .insert_header((
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-cache")))
        .body(body)
}

/// The dashboard's page (open to all: it holds no data).
#[utoipa::path(get, path = "/ui", tag = "ui", responses(
    (status = 200, description = "The dashboard's HTML page", content_type = "text/html", body = String),
))]
pub(super) async fn index() -> HttpResponse {
    file("text/html; charset=utf-8", INDEX_HTML)
}

/// The dashboard's page, under `/ui/` too.
#[utoipa::path(get, path = "/ui/", tag = "ui", responses(
    (status = 200, description = "The dashboard's HTML page", content_type = "text/html", body = String),
))]
pub(super) async fn index_with_slash() -> HttpResponse {
    index().await
}

/// The dashboard's script.
#[utoipa::path(get, path = "/ui/app.js", tag = "ui", responses(
    (status = 200, description = "JavaScript", content_type = "text/javascript", body = String),
))]
pub(super) async fn app_js() -> HttpResponse {
    file("text/javascript; charset=utf-8", APP_JS)
}

/// The dashboard's style sheet.
#[utoipa::path(get, path = "/ui/style.css", tag = "ui", responses(
    (status = 200, description = "CSS", content_type = "text/css", body = String),
))]
pub(super) async fn style_css() -> HttpResponse {
    file("text/css; charset=utf-8", STYLE_CSS)
}
