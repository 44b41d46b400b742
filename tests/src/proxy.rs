//! A TCP proxy between a process under test and a real service, which the test can cut (every
//! open connection is dropped and new ones are refused) and restore.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

#[derive(Debug)]
struct State {
    /// Whether new connections are forwarded.
    open: bool,
    /// Cancelled on cut: ends every connection forwarded since the last restore.
    generation: CancellationToken,
    /// Connections forwarded since the start.
    forwarded: u64,
}

/// A controllable TCP proxy; dropped, it stops listening and closes its connections.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: CancellationToken,
    /// While true, connections stay open but no byte is forwarded (a black hole).
    stalled: watch::Sender<bool>,
}

impl TcpProxy {
    /// Listens on 127.0.0.1 (a free port) and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<TcpProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            open: true,
            generation: CancellationToken::new(),
            forwarded: 0,
        }));
        let stop = CancellationToken::new();
        let (stalled, _) = watch::channel(false);
        tokio::spawn(accept_loop(
            listener,
            upstream,
            state.clone(),
            stop.clone(),
            stalled.clone(),
        ));
        Ok(TcpProxy {
            addr,
            state,
            stop,
            stalled,
        })
    }

    /// The address to point the process under test at.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many connections it has forwarded (proof that a process used this address).
    pub fn forwarded(&self) -> u64 {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).forwarded
    }

    /// Drops every open connection and refuses new ones until [`TcpProxy::restore`].
    pub fn cut(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.open = false;
        state.generation.cancel();
        state.generation = CancellationToken::new();
    }

    /// Forwards new connections again (and ends a stall).
    pub fn restore(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).open = true;
        self.stalled.send_replace(false);
    }

    /// Keeps every connection open but stops forwarding bytes, until [`TcpProxy::restore`]:
    /// the peer sees a network that swallows everything, not a closed connection.
    pub fn stall(&self) {
        self.stalled.send_replace(true);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.cut();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: CancellationToken,
    stalled: watch::Sender<bool>,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((client, _)) = accepted else { continue };
        let generation = {
            let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
            if !state.open {
                // Refused: the client sees the connection closed at once.
                drop(client);
                continue;
            }
            state.forwarded += 1;
            state.generation.clone()
        };
        tokio::spawn(forward(client, upstream, generation, stalled.subscribe()));
    }
}

async fn forward(
    client: TcpStream,
    upstream: SocketAddr,
    generation: CancellationToken,
    stalled: watch::Receiver<bool>,
) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::select! {
        _ = generation.cancelled() => {}
        _ = pump(client_read, server_write, stalled.clone()) => {}
        _ = pump(server_read, client_write, stalled) => {}
    }
}

/// Copies one direction, holding every chunk back while the proxy is stalled.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut stalled: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if stalled.wait_for(|s| !*s).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
