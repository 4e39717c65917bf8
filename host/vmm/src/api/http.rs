//! The small part of HTTP/1.1 the management API speaks: one request per
//! connection, a body only with `Content-Length`, every size capped. Parsed
//! whole before anything is done with it; anything else gets a status code.

use std::io::{self, BufRead, Read, Write};

/// The most bytes of request line and headers together.
pub(crate) const MAX_HEAD: usize = 8 * 1024;
/// The largest body a request may carry.
pub(crate) const MAX_BODY: usize = 64 * 1024;
/// The most header lines.
const MAX_HEADERS: usize = 64;

/// A request's method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Put,
    Patch,
    Post,
    Delete,
}

impl Method {
    fn parse(word: &str) -> Option<Self> {
        Some(match word {
            "GET" => Self::Get,
            "PUT" => Self::Put,
            "PATCH" => Self::Patch,
            "POST" => Self::Post,
            "DELETE" => Self::Delete,
            _ => return None,
        })
    }

    /// The method's name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Post => "POST",
            Self::Delete => "DELETE",
        }
    }
}

/// A parsed request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Request {
    pub(crate) method: Method,
    /// The path, without the query.
    pub(crate) path: String,
    /// The query string, without the `?`.
    pub(crate) query: String,
    pub(crate) body: Vec<u8>,
}

/// A response: a status, a content type and a body.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) content_type: &'static str,
    pub(crate) body: String,
}

impl Response {
    /// A JSON response.
    pub(crate) fn json(status: u16, value: &serde_json::Value) -> Self {
        let mut body = value.to_string();
        body.push('\n');
        Self { status, content_type: "application/json", body }
    }

    /// A JSON error: `{"error": message}`.
    pub(crate) fn error(status: u16, message: impl Into<String>) -> Self {
        Self::json(status, &serde_json::json!({ "error": message.into() }))
    }

    /// Writes the response and closes the exchange.
    pub(crate) fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        write!(
            out,
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len(),
            self.body
        )?;
        out.flush()
    }
}

/// The reason phrase of the status codes the API uses.
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Reads and parses one request; an error is the response to send instead.
pub(crate) fn read_request(stream: &mut impl BufRead) -> Result<Request, Response> {
    let head = read_head(stream)?;
    let text = std::str::from_utf8(&head).map_err(|_| Response::error(400, "the request head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let mut words = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (words.next(), words.next(), words.next(), words.next())
    else {
        return Err(Response::error(400, "a malformed request line"));
    };
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(Response::error(505, format!("{version} is not HTTP/1.1")));
    }
    let method = Method::parse(method).ok_or_else(|| Response::error(405, format!("method {method} is not served")))?;
    if !target.starts_with('/') {
        return Err(Response::error(400, "the request target is not a path"));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut length = None;
    let mut count = 0usize;
    for line in lines.filter(|l| !l.is_empty()) {
        count = count.saturating_add(1);
        if count > MAX_HEADERS {
            return Err(Response::error(431, format!("more than {MAX_HEADERS} headers")));
        }
        let (name, value) = line.split_once(':').ok_or_else(|| Response::error(400, "a malformed header line"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n: usize = value.parse().map_err(|_| Response::error(400, "a malformed Content-Length"))?;
            if length.replace(n).is_some_and(|old| old != n) {
                return Err(Response::error(400, "two different Content-Length headers"));
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(Response::error(501, "Transfer-Encoding is not supported: send Content-Length"));
        }
    }
    let length = length.unwrap_or(0);
    if length > MAX_BODY {
        return Err(Response::error(413, format!("the body is {length} bytes, more than {MAX_BODY}")));
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).map_err(|e| timeout_or(e, "the body ended early"))?;
    Ok(Request { method, path: path.to_string(), query: query.to_string(), body })
}

fn timeout_or(e: io::Error, what: &str) -> Response {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            Response::error(408, "the request did not arrive in time")
        }
        _ => Response::error(400, what),
    }
}

/// The request line and headers, up to the blank line, within [`MAX_HEAD`].
fn read_head(stream: &mut impl BufRead) -> Result<Vec<u8>, Response> {
    let mut head = Vec::new();
    loop {
        let room = MAX_HEAD.saturating_sub(head.len());
        if room == 0 {
            return Err(Response::error(431, format!("the request head is longer than {MAX_HEAD} bytes")));
        }
        let before = head.len();
        let n = stream
            .by_ref()
            .take(room as u64)
            .read_until(b'\n', &mut head)
            .map_err(|e| timeout_or(e, "the connection failed"))?;
        if n == 0 {
            return Err(Response::error(400, "the connection closed before the request ended"));
        }
        let line = head.get(before..).unwrap_or(&[]);
        if line == b"\r\n" || line == b"\n" {
            head.truncate(before.saturating_sub(2));
            return Ok(head);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn parse(text: &[u8]) -> Result<Request, Response> {
        read_request(&mut Cursor::new(text.to_vec()))
    }

    #[test]
    fn a_request_with_a_body_and_a_query() {
        let r = parse(b"PUT /vm/shutdown?x=1 HTTP/1.1\r\nHost: pvkit\r\nContent-Length: 2\r\n\r\n{}").unwrap();
        assert_eq!(
            (r.method, r.path.as_str(), r.query.as_str(), r.body.as_slice()),
            (Method::Put, "/vm/shutdown", "x=1", &b"{}"[..])
        );
        let r = parse(b"GET /vm HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!((r.method, r.path.as_str(), r.body.len()), (Method::Get, "/vm", 0));
    }

    #[test]
    fn bad_requests_get_their_status() {
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: y\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        for (text, status) in [
            (&b"BREW /pot HTTP/1.1\r\n\r\n"[..], 405),
            (b"GET /vm HTTP/2\r\n\r\n", 505),
            (b"GET vm HTTP/1.1\r\n\r\n", 400),
            (b"GET /vm\r\n\r\n", 400),
            (b"GET /vm HTTP/1.1 extra\r\n\r\n", 400),
            (b"PUT /vm HTTP/1.1\r\nContent-Length: lots\r\n\r\n", 400),
            (b"PUT /vm HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
            (b"PUT /vm HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", 413),
            (b"PUT /vm HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
            (b"PUT /vm HTTP/1.1\r\nContent-Length: 10\r\n\r\n{}", 400),
            (b"GET /vm HTTP/1.1\r\nno colon\r\n\r\n", 400),
            (b"GET /vm HTTP/1.1\r\n", 400),
            (b"", 400),
            (b"\xff\xfe / HTTP/1.1\r\n\r\n", 400),
            (big.as_bytes(), 431),
            (many.as_bytes(), 431),
        ] {
            let got = parse(text).unwrap_err();
            assert_eq!(got.status, status, "{:?}: {got:?}", String::from_utf8_lossy(text));
            let body: serde_json::Value = serde_json::from_str(&got.body).unwrap();
            assert!(body["error"].is_string());
        }
    }

    #[test]
    fn responses_carry_their_length_and_close() {
        let mut out = Vec::new();
        Response::error(409, "the machine is not running").write_to(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 409 Conflict\r\nContent-Type: application/json\r\n"), "{text}");
        assert!(text.contains("Connection: close\r\n\r\n{\"error\":\"the machine is not running\"}\n"), "{text}");
    }
}
