//! What `kv.rs` needs to load its nodes: a minimal async HTTP/1.1
//! keep-alive client on tokio, the open-loop pacer, the load tool's latency
//! histogram, and small helpers for `/proc` and test values. (The load tool,
//! `dnd bench`, is in `src/load/` and speaks HTTP through `ureq`.)
//!
//! A bench includes this file with `mod support;` and may use only part of
//! it.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

/// How long opening one connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest response body accepted.
const MAX_BODY: usize = 64 * 1024 * 1024;

// ---------------------------------------------------------------------------
// Failures

/// Why a request did not count as done.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Fail {
    Status(u16),
    Connect,
    Timeout,
    /// The connection broke or closed mid-request.
    Io,
    /// A response this client cannot read.
    Protocol,
    /// A read answered with a value of another size.
    WrongValue,
    /// A read found no value for the key.
    Missing,
}

impl Fail {
    pub fn label(self) -> String {
        match self {
            Fail::Status(code) => format!("HTTP {code}"),
            Fail::Connect => "connect error".into(),
            Fail::Timeout => "timeout".into(),
            Fail::Io => "connection broken".into(),
            Fail::Protocol => "unreadable response".into(),
            Fail::WrongValue => "wrong value size".into(),
            Fail::Missing => "missing key".into(),
        }
    }
}

// ---------------------------------------------------------------------------
// A minimal HTTP/1.1 keep-alive client

/// A response read by [`Conn::request`]; its body stays in the connection's
/// buffer ([`Conn::body`]).
pub struct Response {
    pub status: u16,
    /// The status line and headers, up to the empty line.
    head: Range<usize>,
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

    /// The value of the first header `name` (any case) of the last
    /// response, trimmed; `None` when it has none.
    pub fn header(&self, response: &Response, name: &str) -> Option<&str> {
        let head = std::str::from_utf8(self.buf.get(response.head.clone())?).ok()?;
        head.split("\r\n").skip(1).find_map(|line| {
            let (n, value) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| value.trim())
        })
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
    Ok((
        Response {
            status,
            head: 0..head_end,
            body,
        },
        close,
    ))
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

// Each bench uses part of this file (see the module doc).
#[allow(unused_imports)]
pub use dnd::dev::{free_port, http_get};

// ---------------------------------------------------------------------------
// Latency histogram: the load tool's (`dnd bench`), so that both report
// percentiles the same way.

pub use dnd::load::histogram::Histogram;

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
/// says so), in batches at each tick of tokio's 1 ms timer: a request's
/// scheduled start is the tick that released it, whether or not a worker is
/// free to send it then.
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
            released.push(Some((i, now)));
            i += 1;
        }
    }
}

// ---------------------------------------------------------------------------
// Helpers

/// User and system CPU time of the processes `pids` (`self` for this one)
/// so far, in seconds, from `/proc` (Linux; clock ticks of 10 ms).
pub fn cpu_seconds(pids: &[String]) -> Option<f64> {
    let mut ticks = 0;
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name: state is the first, utime the 12th.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        ticks += fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    }
    Some(ticks as f64 / 100.0)
}

/// A value of `bytes` printable bytes; not one repeated byte, in case the
/// engine compresses.
pub fn value_of(bytes: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..bytes)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b'a' + (x % 26) as u8
        })
        .collect()
}
