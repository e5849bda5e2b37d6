//! A TCP proxy that can black-hole its connections, for failover tests.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Forwards TCP connections to `upstream` until [`BlackHoleProxy::cut`]; from then on it stops
/// forwarding in both directions but keeps every socket open, which is how a network partition
/// or a lost node looks to the peers: no FIN, no RST, and the kernel on each side still
/// acknowledges what it receives, so neither TCP nor keepalives notice anything. Connections
/// made after the cut are accepted and never served.
#[derive(Debug)]
pub struct BlackHoleProxy {
    addr: SocketAddr,
    cut: CancellationToken,
}

impl BlackHoleProxy {
    /// Listens on a free loopback port.
    ///
    /// # Panics
    /// When no port can be bound.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("bound proxy");
        let cut = CancellationToken::new();
        let token = cut.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(serve(client, upstream, token.clone()));
            }
        });
        Self { addr, cut }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Black-holes every connection, present and future.
    pub fn cut(&self) {
        self.cut.cancel();
    }
}

async fn serve(client: TcpStream, upstream: SocketAddr, cut: CancellationToken) {
    if cut.is_cancelled() {
        let _held = client;
        return std::future::pending().await;
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    tokio::join!(
        forward(&mut client_read, &mut server_write, &cut),
        forward(&mut server_read, &mut client_write, &cut),
    );
    if cut.is_cancelled() {
        // Keep both sockets open for good.
        let _held = (client_read, client_write, server_read, server_write);
        std::future::pending::<()>().await;
    }
}

async fn forward(from: &mut OwnedReadHalf, to: &mut OwnedWriteHalf, cut: &CancellationToken) {
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let read = tokio::select! {
            () = cut.cancelled() => return,
            read = from.read(&mut buffer) => read,
        };
        let Ok(n @ 1..) = read else {
            let _ = to.shutdown().await;
            return;
        };
        // Bytes read just as the cut happens are dropped, as a dead link drops packets.
        if cut.is_cancelled() || to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}
