//! A TCP proxy in front of the API server whose link a test can degrade: pass traffic,
//! delay it by a fixed latency (each chunk is held for that long, without slowing the
//! chunks behind it), or black-hole it (connections stay open, nothing gets through).
//! For testing what a client does when its API server is slow or silently gone.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// What the link does with the bytes it carries. A black hole drops them, so a stream
/// that resumes afterwards has lost bytes: it is for links that stay cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    Pass,
    Delay(Duration),
    BlackHole,
}

/// A running proxy; dropping it closes every connection through it.
pub struct Proxy {
    addr: SocketAddr,
    link: Arc<Mutex<Link>>,
    _tasks: JoinSet<()>,
}

impl Proxy {
    /// Starts a proxy on a free loopback port that forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let link = Arc::new(Mutex::new(Link::Pass));
        let mut tasks = JoinSet::new();
        let shared = link.clone();
        tasks.spawn(async move {
            // The connections' tasks live as long as the accept loop (and so the proxy).
            let mut connections = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let link = shared.clone();
                connections.spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::join!(
                        carry(client_read, server_write, link.clone()),
                        carry(server_read, client_write, link),
                    );
                });
            }
        });
        Ok(Self {
            addr,
            link,
            _tasks: tasks,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes the link for every connection, open or new.
    pub fn set(&self, link: Link) {
        *self.link.lock().unwrap_or_else(PoisonError::into_inner) = link;
    }
}

/// Copies `from` to `to` through the link: each chunk is held until its due time (read
/// time plus the delay at that moment), and dropped while the link is a black hole.
async fn carry(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    link: Arc<Mutex<Link>>,
) {
    let (queue, mut due) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    // Reader and writer in one future: dropping the connection stops both.
    let writer = async move {
        while let Some((at, bytes)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
    };
    let reader = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let read = match from.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => read,
            };
            let now = Instant::now();
            let at = match *link.lock().unwrap_or_else(PoisonError::into_inner) {
                Link::Pass => now,
                Link::Delay(delay) => now + delay,
                Link::BlackHole => continue,
            };
            if queue.send((at, buffer[..read].to_vec())).is_err() {
                break;
            }
        }
    };
    tokio::join!(reader, writer);
}
