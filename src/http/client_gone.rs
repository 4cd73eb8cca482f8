//! Noticing a client that went away while its request waits: a watch
//! holds its place among the node's open watches, and its connection, for
//! as long as it waits, and actix-web does not drop a waiting handler when
//! its client closes the connection (actix-web issue #1313).
//!
//! Owns the connection's descriptor number, noted when a connection opens,
//! and a wait on a duplicate of it for the client's end of the stream.
//! Must never read from or write to the connection: its bytes are
//! actix-web's.

use std::any::Any;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use actix_web::dev::Extensions;
use actix_web::HttpRequest;
use tokio::io::Interest;

/// The descriptor of a request's connection.
#[derive(Clone, Copy, Debug)]
struct ConnectionFd(RawFd);

/// While the client has sent bytes not read yet (a pipelined request, a
/// TLS alert), readiness stays set and cannot say whether it also closed;
/// then the wait looks again this often.
const RECHECK: Duration = Duration::from_secs(1);

/// `HttpServer::on_connect`: notes the descriptor of a plain or TLS
/// connection.
pub fn note_connection(connection: &dyn Any, data: &mut Extensions) {
    let fd = if let Some(tcp) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
        tcp.as_raw_fd()
    } else if let Some(tls) = connection
        .downcast_ref::<actix_tls::accept::rustls_0_23::TlsStream<actix_web::rt::net::TcpStream>>()
    {
        tls.as_raw_fd()
    } else {
        return;
    };
    data.insert(ConnectionFd(fd));
}

/// Resolves once the client of `req` has closed its end of the
/// connection; never, if that cannot be known.
pub async fn client_gone(req: &HttpRequest) {
    let Some(stream) = watched_stream(req) else {
        return std::future::pending().await;
    };
    let mut byte = [0u8; 1];
    loop {
        match stream.ready(Interest::READABLE).await {
            Ok(ready) if ready.is_read_closed() || ready.is_error() => return,
            Ok(_) => {}
            Err(_) => return,
        }
        // Readable: the end of the stream (or a reset) if nothing is left
        // to read, else bytes actix-web has not read yet.
        match stream.peek(&mut byte).await {
            Ok(0) | Err(_) => return,
            Ok(_) => tokio::time::sleep(RECHECK).await,
        }
    }
}

/// A duplicate of the connection's descriptor, registered for readiness
/// of its own.
fn watched_stream(req: &HttpRequest) -> Option<tokio::net::TcpStream> {
    let ConnectionFd(fd) = *req.conn_data::<ConnectionFd>()?;
    // SAFETY: the connection this request came on stays open while its
    // handler runs (the dispatcher that owns it is polling the handler),
    // and the descriptor is only borrowed here to be duplicated at once.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let owned = borrowed.try_clone_to_owned().ok()?;
    let std_stream = std::net::TcpStream::from(owned);
    std_stream.set_nonblocking(true).ok()?;
    tokio::net::TcpStream::from_std(std_stream).ok()
}
