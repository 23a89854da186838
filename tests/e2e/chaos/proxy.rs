//! A loopback TCP fault proxy: forwards `127.0.0.1:<port>` to a real
//! service until told to go down; down, it drops every open connection and
//! closes its port (new connections are refused) until told to come back up
//! on the same port. Given an idle cutoff, it also closes any connection
//! that carried nothing either way for that long, as load balancers, NAT
//! and some servers do. Everything it runs stops when it is dropped.

use std::{net::SocketAddr, sync::Mutex, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};
use tokio_util::sync::CancellationToken;

/// A fault proxy in front of one service.
pub struct FaultProxy {
    listen: SocketAddr,
    upstream: SocketAddr,
    idle_cutoff: Option<Duration>,
    /// Cancelled to take the proxy down: ends the accept loop and every pipe.
    up: Mutex<CancellationToken>,
}

impl FaultProxy {
    /// Starts forwarding a free loopback port to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        Self::start_with(upstream, None).await
    }

    /// Like [`FaultProxy::start`], and closes connections idle for `cutoff`.
    pub async fn with_idle_cutoff(upstream: SocketAddr, cutoff: Duration) -> Self {
        Self::start_with(upstream, Some(cutoff)).await
    }

    async fn start_with(upstream: SocketAddr, idle_cutoff: Option<Duration>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy port");
        let listen = listener.local_addr().expect("proxy address");
        let up = CancellationToken::new();
        tokio::spawn(serve(listener, upstream, idle_cutoff, up.clone()));
        Self {
            listen,
            upstream,
            idle_cutoff,
            up: Mutex::new(up),
        }
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.listen.port()
    }

    /// Drops every connection and refuses new ones.
    pub fn down(&self) {
        self.up.lock().expect("proxy state").cancel();
    }

    /// Accepts and forwards again, on the same port.
    pub async fn up(&self) {
        let listener = crate::helpers::eventually(
            std::time::Duration::from_secs(10),
            "the proxy port to be free again",
            || async { TcpListener::bind(self.listen).await.ok() },
        )
        .await;
        let token = CancellationToken::new();
        tokio::spawn(serve(
            listener,
            self.upstream,
            self.idle_cutoff,
            token.clone(),
        ));
        *self.up.lock().expect("proxy state") = token;
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Ok(t) = self.up.lock() {
            t.cancel();
        }
    }
}

async fn serve(
    listener: TcpListener,
    upstream: SocketAddr,
    idle_cutoff: Option<Duration>,
    up: CancellationToken,
) {
    loop {
        let client = tokio::select! {
            () = up.cancelled() => return, // drops the listener: the port refuses
            r = listener.accept() => match r {
                Ok((client, _)) => client,
                Err(_) => continue,
            },
        };
        let up = up.clone();
        tokio::spawn(async move {
            let Ok(mut server) = TcpStream::connect(upstream).await else {
                return;
            };
            let mut client = client;
            tokio::select! {
                () = up.cancelled() => {} // both sockets close here
                () = pipe(&mut client, &mut server, idle_cutoff) => {}
            }
        });
    }
}

/// Copies both ways until either side closes or, with a cutoff, until
/// nothing has passed for that long; then both sockets close.
async fn pipe(client: &mut TcpStream, server: &mut TcpStream, idle_cutoff: Option<Duration>) {
    let Some(cutoff) = idle_cutoff else {
        let _ = tokio::io::copy_bidirectional(client, server).await;
        return;
    };
    let (mut client_rx, mut client_tx) = client.split();
    let (mut server_rx, mut server_tx) = server.split();
    let (mut up, mut down) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    loop {
        tokio::select! {
            r = client_rx.read(&mut up) => match r {
                Ok(n) if n > 0 && server_tx.write_all(&up[..n]).await.is_ok() => {}
                _ => return,
            },
            r = server_rx.read(&mut down) => match r {
                Ok(n) if n > 0 && client_tx.write_all(&down[..n]).await.is_ok() => {}
                _ => return,
            },
            () = tokio::time::sleep(cutoff) => return,
        }
    }
}
