//! A TCP proxy between a process under test and a real service, which the test can cut (every
//! open connection is dropped and new ones are refused) and restore.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

#[derive(Debug)]
struct State {
    /// Whether new connections are forwarded.
    open: bool,
    /// Cancelled on cut: ends every connection forwarded since the last restore.
    generation: CancellationToken,
}

/// A controllable TCP proxy; dropped, it stops listening and closes its connections.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: CancellationToken,
}

impl TcpProxy {
    /// Listens on 127.0.0.1 (a free port) and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<TcpProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            open: true,
            generation: CancellationToken::new(),
        }));
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, upstream, state.clone(), stop.clone()));
        Ok(TcpProxy { addr, state, stop })
    }

    /// The address to point the process under test at.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every open connection and refuses new ones until [`TcpProxy::restore`].
    pub fn cut(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.open = false;
        state.generation.cancel();
        state.generation = CancellationToken::new();
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).open = true;
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
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((client, _)) = accepted else { continue };
        let generation = {
            let state = state.lock().unwrap_or_else(|e| e.into_inner());
            if !state.open {
                // Refused: the client sees the connection closed at once.
                drop(client);
                continue;
            }
            state.generation.clone()
        };
        tokio::spawn(forward(client, upstream, generation));
    }
}

async fn forward(mut client: TcpStream, upstream: SocketAddr, generation: CancellationToken) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    tokio::select! {
        _ = generation.cancelled() => {}
        _ = copy_bidirectional(&mut client, &mut server) => {}
    }
}
