//! A TCP proxy that can black-hole its connections, as a network partition does.
//!
//! A crashed peer closes its sockets (or its kernel answers with RST), and the other side
//! notices at once. A partition is different: packets just stop arriving, nothing closes, and
//! each side believes the other is still there until some timeout of its own fires. That is what
//! [`TcpProxy::black_hole`] does to every connection through it: both directions stop being
//! forwarded, and both sockets stay open (the client's and the server's: the server keeps the
//! session, its locks and its transaction) until the proxy is dropped. New connections are
//! accepted and never forwarded either.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A loopback TCP proxy to one upstream address; every socket is closed when it is dropped.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    black_holed: watch::Sender<bool>,
    /// Sockets of black-holed connections, kept open (never read, never written).
    graveyard: Arc<Mutex<Vec<Box<dyn std::fmt::Debug + Send>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        let _ = self.black_holed.send(true);
        self.graveyard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards every connection to `upstream`.
    ///
    /// # Errors
    /// When no port can be bound.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (black_holed, watching) = watch::channel(false);
        let graveyard: Arc<Mutex<Vec<Box<dyn std::fmt::Debug + Send>>>> = Arc::default();
        let graves = graveyard.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let graves = graves.clone();
                let watching = watching.clone();
                tokio::spawn(async move {
                    if *watching.borrow() {
                        bury(&graves, client);
                        return;
                    }
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return; // the client sees its connection closed, as with no server
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::spawn(forward(
                        client_read,
                        server_write,
                        watching.clone(),
                        graves.clone(),
                    ));
                    tokio::spawn(forward(server_read, client_write, watching, graves));
                });
            }
        });
        Ok(Self {
            addr,
            black_holed,
            graveyard,
            accept,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops forwarding anything, on every connection, for good; closes nothing.
    pub fn black_hole(&self) {
        let _ = self.black_holed.send(true);
    }
}

fn bury<T: std::fmt::Debug + Send + 'static>(
    graves: &Mutex<Vec<Box<dyn std::fmt::Debug + Send>>>,
    socket: T,
) {
    graves
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(Box::new(socket));
}

/// Copies `from` to `to` until either closes (then closes the other way's write side, as the
/// peer did) or the proxy black-holes (then keeps both open and silent).
async fn forward(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut black_holed: watch::Receiver<bool>,
    graves: Arc<Mutex<Vec<Box<dyn std::fmt::Debug + Send>>>>,
) {
    let mut buffer = vec![0_u8; 16 * 1024];
    loop {
        if *black_holed.borrow() {
            break;
        }
        let read = tokio::select! {
            biased;
            changed = black_holed.changed() => {
                if changed.is_err() {
                    break; // the proxy is gone
                }
                continue;
            }
            read = from.read(&mut buffer) => read,
        };
        match read {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => {
                if *black_holed.borrow() {
                    break; // read, never delivered: lost in the partition
                }
                if to.write_all(&buffer[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
    bury(&graves, from);
    bury(&graves, to);
}
