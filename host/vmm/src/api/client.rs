//! The client side of the management API, for everything in pvkit that
//! talks to a machine it did not build: `pvkit ctl`, `pvkit bench` and
//! `pvkit drill`. One request per connection, as the server expects.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// A request: method, target and JSON body (empty for none).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Request<'a> {
    /// `GET` or `PUT`.
    pub(crate) method: &'static str,
    /// The route, like `/vm`.
    pub(crate) target: &'a str,
    /// The body.
    pub(crate) body: &'a str,
}

impl<'a> Request<'a> {
    /// `GET target`.
    pub(crate) fn get(target: &'a str) -> Self {
        Self { method: "GET", target, body: "" }
    }

    /// `PUT target` with `body`.
    pub(crate) fn put(target: &'a str, body: &'a str) -> Self {
        Self { method: "PUT", target, body }
    }
}

/// A connection that has sent its request and read the answer's status and
/// headers; the body is still to be read.
pub(crate) struct Answer {
    /// The HTTP status.
    pub(crate) status: u16,
    body: BufReader<UnixStream>,
}

impl Answer {
    /// Whether the status is 2xx.
    pub(crate) fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The rest of the body, read to its end.
    pub(crate) fn body(mut self) -> std::io::Result<String> {
        let mut text = String::new();
        self.body.read_to_string(&mut text)?;
        Ok(text)
    }

    /// The body line by line, as the event stream sends it.
    pub(crate) fn lines(self) -> impl Iterator<Item = String> {
        self.body.lines().map_while(Result::ok)
    }
}

/// Sends `request` to the API on `sock` and reads the answer's head; the
/// answer must come within `timeout` (`None`: wait for ever, for streams).
/// Errors are one line naming the socket.
pub(crate) fn send(sock: &Path, request: Request<'_>, timeout: Option<Duration>) -> Result<Answer, String> {
    let fail = |what: &str, e: std::io::Error| format!("{what} {}: {e}", sock.display());
    let mut stream = UnixStream::connect(sock).map_err(|e| fail("cannot connect to", e))?;
    stream.set_read_timeout(timeout).map_err(|e| fail("cannot use", e))?;
    let Request { method, target, body } = request;
    write!(
        stream,
        "{method} {target} HTTP/1.1\r\nHost: pvkit\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| fail("cannot send to", e))?;
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).map_err(|e| fail("no answer from", e))?;
    let status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| {
        format!("{} answered something that is not HTTP: {:?}", sock.display(), status_line.trim_end())
    })?;
    loop {
        let mut header = String::new();
        let n = reader.read_line(&mut header).map_err(|e| fail("the answer broke off from", e))?;
        if n == 0 || header == "\r\n" {
            break;
        }
    }
    Ok(Answer { status, body: reader })
}

/// Sends `request` and reads the whole answer: its JSON body when the
/// status is 2xx, else the one-line error the API gave (`409 Conflict:
/// ...`).
pub(crate) fn call(sock: &Path, request: Request<'_>, timeout: Duration) -> Result<serde_json::Value, String> {
    let answer = send(sock, request, Some(timeout))?;
    let (ok, status) = (answer.ok(), answer.status);
    let body = answer.body().map_err(|e| format!("the answer broke off from {}: {e}", sock.display()))?;
    if ok {
        return serde_json::from_str(&body).map_err(|e| format!("{} answered {}: {e}", request.target, body.trim()));
    }
    Err(format!(
        "{} {} {}: {status} {}: {}",
        request.method,
        request.target,
        sock.display(),
        super::http::reason(status),
        error_of(&body)
    ))
}

/// What an error answer's body says: its `error` field, or the body.
pub(crate) fn error_of(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| body.trim().to_string())
}
