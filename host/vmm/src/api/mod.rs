//! The management API (`docs/api.yaml`): HTTP/1.1 with JSON bodies on a
//! Unix socket, served by a thread of its own and one short-lived thread per
//! client, so a client that connects and says nothing holds up neither the
//! machine nor the other clients.

pub(crate) mod client;
pub(crate) mod http;
pub(crate) mod routes;

use std::io::{BufReader, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use self::http::Response;
use self::routes::{Answer, Target};

/// How long a client has to send its request, and to take each write.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the accept loop reads the request of a client it turns away.
const BUSY_READ: Duration = Duration::from_millis(50);
/// Clients served at once; more are answered 503 at once.
const MAX_CLIENTS: usize = 16;

/// The API's socket, bound and listening (so clients may connect) before the
/// machine is built; served once it is.
#[derive(Debug)]
pub(crate) struct ApiSocket {
    listener: UnixListener,
    path: PathBuf,
}

/// Why the socket cannot be had: one line naming the path.
fn refuse(path: &Path, why: impl std::fmt::Display) -> String {
    format!("cannot serve the API on {}: {why}", path.display())
}

impl ApiSocket {
    /// Binds `path`, mode 0600. An existing path is refused unless it is a
    /// socket nobody listens on (left by a pvkit that died), which is replaced.
    pub(crate) fn bind(path: &Path) -> Result<Self, String> {
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(refuse(path, "the path exists and is not a socket"));
            }
            match UnixStream::connect(path) {
                Ok(_) => return Err(refuse(path, "another process is listening on it")),
                Err(_) => {
                    std::fs::remove_file(path).map_err(|e| refuse(path, format!("removing the stale socket: {e}")))?
                }
            }
        }
        // The socket is created with no permission for others: the umask
        // holds for the bind alone, before any other thread of pvkit runs.
        // SAFETY: umask only changes this process's file-creation mask.
        let old = unsafe { libc::umask(0o177) };
        let listener = UnixListener::bind(path);
        // SAFETY: as above; this restores the mask pvkit started with.
        unsafe { libc::umask(old) };
        let listener = listener.map_err(|e| refuse(path, e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| refuse(path, e))?;
        Ok(Self { listener, path: path.to_owned() })
    }

    /// The socket's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Serves `target` on the calling thread, one client at a time, until
    /// `done` says so after an answer: for a pvkit on standby, whose only
    /// work is to wait for a restore.
    pub(crate) fn serve_until(&self, target: &dyn Target, done: impl Fn() -> bool) {
        for stream in self.listener.incoming() {
            let Ok(stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(CLIENT_TIMEOUT));
            let _ = stream.set_write_timeout(Some(CLIENT_TIMEOUT));
            serve_client(stream, target);
            if done() {
                return;
            }
        }
    }

    /// Serves `target` from a thread of its own until the process ends.
    pub(crate) fn serve(self, target: Arc<dyn Target>) -> std::io::Result<Clients> {
        let clients = Clients(Arc::new(AtomicUsize::new(0)));
        let counted = clients.clone();
        std::thread::Builder::new().name("api".into()).spawn(move || self.accept_loop(&target, &counted.0))?;
        Ok(clients)
    }

    fn accept_loop(self, target: &Arc<dyn Target>, clients: &Arc<AtomicUsize>) {
        crate::confine::enter(crate::confine::Kind::Api);
        for stream in self.listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(CLIENT_TIMEOUT));
            let _ = stream.set_write_timeout(Some(CLIENT_TIMEOUT));
            if clients.fetch_add(1, Ordering::AcqRel) >= MAX_CLIENTS {
                clients.fetch_sub(1, Ordering::AcqRel);
                // Take what the client sent (briefly), so that closing does
                // not reset the connection before it reads the answer.
                let _ = stream.set_read_timeout(Some(BUSY_READ));
                let _ = http::read_request(&mut BufReader::new(&stream));
                let _ = Response::error(503, "too many clients at once").write_to(&mut stream);
                continue;
            }
            let (target, done) = (Arc::clone(target), Arc::clone(clients));
            let spawned = std::thread::Builder::new().name("api-client".into()).spawn(move || {
                serve_client(stream, &*target);
                done.fetch_sub(1, Ordering::AcqRel);
            });
            if spawned.is_err() {
                clients.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

/// The clients being served, so that the machine's end can wait for their
/// answers (a `stop` is answered before pvkit exits).
#[derive(Clone, Debug)]
pub(crate) struct Clients(Arc<AtomicUsize>);

impl Clients {
    /// Waits until no client is being served, or `limit` has passed.
    pub(crate) fn drain(&self, limit: Duration) {
        let start = std::time::Instant::now();
        while self.0.load(Ordering::Acquire) > 0 && start.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// One exchange: read the request, answer it, close.
fn serve_client(stream: UnixStream, target: &dyn Target) {
    let Ok(mut out) = stream.try_clone() else { return };
    let mut reader = BufReader::new(stream);
    let request = match http::read_request(&mut reader) {
        Ok(request) => request,
        Err(response) => {
            let _ = response.write_to(&mut out);
            return;
        }
    };
    match routes::route(target, &request) {
        Answer::Respond(response) => {
            let _ = response.write_to(&mut out);
        }
        Answer::Stream(events) => {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nConnection: close\r\n\r\n";
            if out.write_all(head.as_bytes()).and_then(|()| out.flush()).is_err() {
                return;
            }
            // Until the machine ends (the bus closes) or the client goes.
            for line in events {
                if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pvkit-api-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("api.sock")
    }

    #[test]
    fn the_socket_is_private_and_a_live_one_is_not_taken_over() {
        let path = scratch("live");
        let _ = std::fs::remove_file(&path);
        let socket = ApiSocket::bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let err = ApiSocket::bind(&path).unwrap_err();
        assert!(err.ends_with("another process is listening on it"), "{err}");
        drop(socket);
        // Now nobody listens: the stale socket is replaced.
        ApiSocket::bind(&path).unwrap();
    }

    #[test]
    fn a_path_that_is_not_a_socket_is_refused() {
        let path = scratch("file");
        std::fs::write(&path, "data").unwrap();
        let err = ApiSocket::bind(&path).unwrap_err();
        assert!(err.ends_with("the path exists and is not a socket"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "data", "the file was not touched");
    }
}
