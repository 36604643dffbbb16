//! The HTTP server loop. poem's own server sets no header read timeout, so a client
//! that trickles its request headers could hold a connection forever; here hyper's
//! HTTP/1.1 connections get one (slowloris is cut off), and shutdown is graceful:
//! stop accepting, let requests in flight finish within a bound, then return.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Addr, Endpoint, Response};

/// Timeouts of the connection layer.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// How long a client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// How long requests in flight may run after the shutdown signal.
    pub shutdown_grace: Duration,
}

/// Serves `endpoint` on `listener` until `shutdown` resolves, then drains.
pub async fn serve<E>(
    listener: tokio::net::TcpListener,
    endpoint: E,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) where
    E: Endpoint<Output = Response> + 'static,
{
    let endpoint = Arc::new(endpoint);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let local = stream.local_addr().ok();
        let endpoint = endpoint.clone();
        let service = service_fn(move |req: hyper::Request<Incoming>| {
            let endpoint = endpoint.clone();
            async move {
                let local = LocalAddr(local.map_or_else(Addr::default, addr_of));
                let remote = RemoteAddr(addr_of(peer));
                let request =
                    poem::Request::from((req, local, remote, poem::http::uri::Scheme::HTTP));
                // Boxed: the endpoint stack's future is kilobytes, and hyper moves the
                // future it is given into its own state for every request.
                let response = Box::pin(endpoint.get_response(request)).await;
                Ok::<_, Infallible>(hyper::Response::<BoxBody<Bytes, std::io::Error>>::from(
                    response,
                ))
            }
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(peer = %peer, error = %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("no longer accepting connections; finishing requests in flight");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(limits.shutdown_grace) => tracing::warn!("shutdown grace elapsed; dropping the remaining connections"),
    }
}

fn addr_of(addr: SocketAddr) -> Addr {
    Addr::SocketAddr(addr)
}
