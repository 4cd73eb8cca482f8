//! The closed and open loops' own HTTP/1.1 client: keep-alive connections
//! on single-threaded tokio runtimes, and the open loop's pacer.
//!
//! Why not `ureq`, which the rest of the tool uses: measured on the same
//! shared two-core machine, 5 s phases, two runs each, 32 ureq clients (a
//! thread each) drove the ceiling server (`examples/ceiling.rs`) at 33,000
//! to 35,000 writes/s against 55,000 to 74,000 with this client on two
//! threads, and 44,000 to 48,000 reads/s against 74,000 to 89,000, while
//! spending 1.1 to 1.2 cores against 0.5 to 0.9; dnd (one node, memory) at
//! about 0.7 of this client's rate. ureq checks a pooled connection with
//! non-blocking peeks and sets socket timeouts on every request (ten system
//! calls against two or three), and 32 threads switch on every answer. On a
//! machine the servers share with the tool, that CPU comes out of the
//! servers' share and squeezes every figure toward the slowest, so the
//! ratios to the ceiling would flatter dnd. The listing and watch
//! workloads, which do not measure throughput per request, use ureq.
//!
//! A connection is opened again after an error, a timeout or a
//! `Connection: close`; requests go one at a time (no pipelining).
//! `benches/kv.rs` loads its nodes with it too.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use ureq::http::Method;

use super::client::{Fail, CONNECT_TIMEOUT};

/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest response body accepted.
const MAX_BODY: usize = 64 * 1024 * 1024;

/// Writes a whole HTTP/1.1 request into `out`.
pub fn request_bytes(
    out: &mut Vec<u8>,
    method: &Method,
    host: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) {
    use std::io::Write as _;
    out.clear();
    let _ = write!(out, "{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    if let Some(content_type) = content_type {
        let _ = write!(out, "Content-Type: {content_type}\r\n");
    }
    if !body.is_empty() || method != Method::GET {
        let _ = write!(out, "Content-Length: {}\r\n", body.len());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// A response read by [`Conn::request`]; its body stays in the connection's
/// buffer ([`Conn::body`]).
pub struct Response {
    pub status: u16,
    body: Range<usize>,
}

impl Response {
    pub fn body_len(&self) -> usize {
        self.body.len()
    }
}

/// One keep-alive connection to one server, opened again after an error, a
/// timeout or a `Connection: close`. Requests go one at a time (no
/// pipelining).
pub struct Conn {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

/// Opens a TCP connection with `TCP_NODELAY`, giving up after
/// [`CONNECT_TIMEOUT`].
pub async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

impl Conn {
    /// Connects now, so that a caller can open its connections before its
    /// clock starts and stop at once on an unreachable server.
    pub async fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = connect(addr).await?;
        Ok(Conn {
            addr,
            stream: Some(stream),
            buf: Vec::with_capacity(16 * 1024),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends `request` (a whole HTTP/1.1 request) and reads its response,
    /// connecting first if the last request left no usable connection.
    pub async fn request(&mut self, request: &[u8], timeout: Duration) -> Result<Response, Fail> {
        if self.stream.is_none() {
            self.stream = Some(connect(self.addr).await.map_err(|_| Fail::Connect)?);
        }
        let stream = self.stream.as_ref().expect("connected above");
        let outcome = tokio::time::timeout(timeout, exchange(stream, request, &mut self.buf)).await;
        match outcome {
            Ok(Ok((response, close))) => {
                if close {
                    self.stream = None;
                }
                Ok(response)
            }
            Ok(Err(fail)) => {
                self.stream = None;
                Err(fail)
            }
            Err(_) => {
                // The answer may still come; it must not be read as the next one's.
                self.stream = None;
                Err(Fail::Timeout)
            }
        }
    }

    /// The body of the last response.
    pub fn body(&self, response: &Response) -> &[u8] {
        self.buf.get(response.body.clone()).unwrap_or_default()
    }
}

async fn write_all(stream: &TcpStream, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        match stream.try_write(data) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => stream.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads what is available onto the end of `buf`; 0 means the peer closed.
async fn read_some(stream: &TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let len = buf.len();
    buf.resize(len + 16 * 1024, 0);
    let result = loop {
        match stream.try_read(&mut buf[len..]) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if let Err(e) = stream.readable().await {
                    break Err(e);
                }
            }
            other => break other,
        }
    };
    buf.truncate(len + *result.as_ref().unwrap_or(&0));
    result
}

/// Reads until `buf` holds at least `len` bytes.
async fn fill(stream: &TcpStream, buf: &mut Vec<u8>, len: usize) -> Result<(), Fail> {
    while buf.len() < len {
        if read_some(stream, buf).await.map_err(|_| Fail::Io)? == 0 {
            return Err(Fail::Io);
        }
    }
    Ok(())
}

/// The position just past the first `\r\n` at or after `from`, reading more
/// as needed.
async fn line_end(stream: &TcpStream, buf: &mut Vec<u8>, from: usize) -> Result<usize, Fail> {
    loop {
        if let Some(at) = buf[from..].windows(2).position(|w| w == b"\r\n") {
            return Ok(from + at + 2);
        }
        if buf.len() - from > MAX_HEAD {
            return Err(Fail::Protocol);
        }
        if read_some(stream, buf).await.map_err(|_| Fail::Io)? == 0 {
            return Err(Fail::Io);
        }
    }
}

/// Writes one request and reads its response: status line, headers, and a
/// body of `Content-Length` bytes, in chunks, or up to the close. Returns the
/// response and whether the server closes the connection after it.
async fn exchange(
    stream: &TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> Result<(Response, bool), Fail> {
    write_all(stream, request).await.map_err(|_| Fail::Io)?;
    buf.clear();
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(Fail::Protocol);
        }
        if read_some(stream, buf).await.map_err(|_| Fail::Io)? == 0 {
            return Err(Fail::Io);
        }
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| Fail::Protocol)?;
    let mut lines = head.split("\r\n");
    let mut status_line = lines.next().unwrap_or_default().split(' ');
    let version = status_line.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(Fail::Protocol);
    }
    let status: u16 = status_line
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or(Fail::Protocol)?;
    let mut close = version == "HTTP/1.0";
    let mut length = None;
    let mut chunked = false;
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').ok_or(Fail::Protocol)?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().map_err(|_| Fail::Protocol)?);
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
            if !chunked && !value.eq_ignore_ascii_case("identity") {
                return Err(Fail::Protocol);
            }
        }
    }
    let body = if status < 200 || status == 204 || status == 304 {
        head_end..head_end
    } else if chunked {
        read_chunked(stream, buf, head_end).await?
    } else if let Some(length) = length {
        if length > MAX_BODY {
            return Err(Fail::Protocol);
        }
        fill(stream, buf, head_end + length).await?;
        head_end..head_end + length
    } else {
        close = true;
        while read_some(stream, buf).await.map_err(|_| Fail::Io)? > 0 {
            if buf.len() - head_end > MAX_BODY {
                return Err(Fail::Protocol);
            }
        }
        head_end..buf.len()
    };
    Ok((Response { status, body }, close))
}

/// Reads a chunked body that starts at `start` and leaves it decoded at
/// `start..` in `buf`.
async fn read_chunked(
    stream: &TcpStream,
    buf: &mut Vec<u8>,
    start: usize,
) -> Result<Range<usize>, Fail> {
    let mut decoded = Vec::new();
    let mut at = start;
    loop {
        let end = line_end(stream, buf, at).await?;
        let line = std::str::from_utf8(&buf[at..end - 2]).map_err(|_| Fail::Protocol)?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| Fail::Protocol)?;
        if decoded.len() + size > MAX_BODY {
            return Err(Fail::Protocol);
        }
        if size == 0 {
            // Trailers, if any, end with an empty line.
            let mut from = end;
            loop {
                let next = line_end(stream, buf, from).await?;
                if next == from + 2 {
                    break;
                }
                from = next;
            }
            break;
        }
        fill(stream, buf, end + size + 2).await?;
        decoded.extend_from_slice(&buf[end..end + size]);
        at = end + size + 2;
    }
    buf.truncate(start);
    buf.extend_from_slice(&decoded);
    Ok(start..buf.len())
}

// ---------------------------------------------------------------------------
// Open loop

/// Requests released by the open loop's pacer: `(number, scheduled start)`,
/// or `None` to stop a worker. Workers on any runtime may take from it.
pub struct Released {
    queue: Mutex<VecDeque<Option<(u64, Instant)>>>,
    ready: tokio::sync::Semaphore,
}

impl Default for Released {
    fn default() -> Self {
        Released {
            queue: Default::default(),
            ready: tokio::sync::Semaphore::new(0),
        }
    }
}

impl Released {
    pub fn push(&self, job: Option<(u64, Instant)>) {
        self.queue.lock().expect("queue lock").push_back(job);
        self.ready.add_permits(1);
    }

    pub async fn pop(&self) -> Option<(u64, Instant)> {
        self.ready.acquire().await.expect("never closed").forget();
        self.queue
            .lock()
            .expect("queue lock")
            .pop_front()
            .expect("a permit per job")
    }
}

/// Releases request `i` at `start + i / rate` until `end` (or until `stop`
/// says so), in batches at each tick of tokio's 1 ms timer. A request's
/// intended start is its due time, whether or not the pacer or a worker was
/// late: latency counts from it.
pub async fn release(
    released: &Released,
    rate: f64,
    start: Instant,
    end: Instant,
    stop: &dyn Fn(u64) -> bool,
) {
    let due = |i: u64| start + Duration::from_secs_f64(i as f64 / rate);
    let mut i = 0;
    while due(i) < end && !stop(i) {
        tokio::time::sleep_until(due(i).into()).await;
        let now = Instant::now();
        while due(i) <= now && due(i) < end && !stop(i) {
            released.push(Some((i, due(i))));
            i += 1;
        }
    }
}
