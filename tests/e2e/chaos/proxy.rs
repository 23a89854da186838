//! A loopback TCP fault proxy: forwards `127.0.0.1:<port>` to a real
//! service until told to go down; down, it drops every open connection and
//! closes its port (new connections are refused) until told to come back up
//! on the same port. Everything it runs stops when it is dropped.

use std::{net::SocketAddr, sync::Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A fault proxy in front of one service.
pub struct FaultProxy {
    listen: SocketAddr,
    upstream: SocketAddr,
    /// Cancelled to take the proxy down: ends the accept loop and every pipe.
    up: Mutex<CancellationToken>,
}

impl FaultProxy {
    /// Starts forwarding a free loopback port to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy port");
        let listen = listener.local_addr().expect("proxy address");
        let up = CancellationToken::new();
        tokio::spawn(serve(listener, upstream, up.clone()));
        Self {
            listen,
            upstream,
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
        tokio::spawn(serve(listener, self.upstream, token.clone()));
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

async fn serve(listener: TcpListener, upstream: SocketAddr, up: CancellationToken) {
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
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
            }
        });
    }
}
