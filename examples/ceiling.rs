//! The ceiling: an actix-web server that answers `GET /kv/{key}` with a fixed
//! body and `PUT`/`POST /kv/{key}` with `204` once it has read the request
//! body, and does nothing else. It is the most an HTTP server built like
//! `dnd`'s (actix-web 4, the same worker count) can do on this machine, so
//! `dnd`'s figures are reported as a fraction of it. Bench-only.
//!
//! ```sh
//! cargo build --release --example ceiling
//! target/release/examples/ceiling --port 7000 --body-bytes 100
//! ```
//!
//! Options: `--address A` (default 127.0.0.1), `--port P` (default 7000),
//! `--body-bytes B` (size of the GET body, default 100), `--workers N`
//! (default: actix-web's, one per core, as `dnd`). It stops on SIGINT or
//! SIGTERM.

use std::process::ExitCode;

use actix_web::{web, App, HttpResponse, HttpServer};
use bytes::Bytes;

const USAGE: &str = "usage: ceiling [--address A] [--port P] [--body-bytes B] [--workers N]";

/// Larger than `dnd`'s default `--max-value-bytes`, so every value a `dnd`
/// node accepts is read here too.
const MAX_BODY: usize = 2 * 1024 * 1024;

struct Args {
    address: String,
    port: u16,
    body_bytes: usize,
    workers: Option<usize>,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args {
        address: "127.0.0.1".into(),
        port: 7000,
        body_bytes: 100,
        workers: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        let number = |text: String| {
            text.parse::<usize>()
                .map_err(|_| format!("{name}: `{text}` is not a valid number"))
        };
        match name.as_str() {
            "-h" | "--help" => return Ok(None),
            "--address" => args.address = value()?,
            "--port" => {
                args.port = u16::try_from(number(value()?)?)
                    .map_err(|_| format!("{name}: not a port number"))?
            }
            "--body-bytes" => args.body_bytes = number(value()?)?,
            "--workers" => args.workers = Some(number(value()?)?.max(1)),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(Some(args))
}

async fn get(body: web::Data<Bytes>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/octet-stream")
        .body(body.get_ref().clone())
}

async fn put(_body: Bytes) -> HttpResponse {
    HttpResponse::NoContent().finish()
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("ceiling: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let body = Bytes::from(vec![b'x'; args.body_bytes]);
    let (address, port, workers) = (args.address.clone(), args.port, args.workers);
    let result = actix_web::rt::System::new().block_on(async move {
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(body.clone()))
                .app_data(web::PayloadConfig::new(MAX_BODY))
                .service(
                    web::resource("/kv/{key}")
                        .route(web::get().to(get))
                        .route(web::put().to(put))
                        .route(web::post().to(put)),
                )
        });
        if let Some(workers) = workers {
            server = server.workers(workers);
        }
        server.bind((address.as_str(), port))?.run().await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "ceiling: cannot serve on {}:{}: {e}",
                args.address, args.port
            );
            ExitCode::FAILURE
        }
    }
}
