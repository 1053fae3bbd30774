//! `mesh-agent app http --listen ADDR --name NAME`: an HTTP/1.1 server that answers every
//! request with a small JSON document naming itself and who called (the peer address it
//! saw), so tests and the demo can see where a request went and from where it came; the
//! request's headers and HTTP version are echoed too (what a proxy added or rewrote; it
//! speaks HTTP/1.1 and h2c), and `?delay_ms=N`
//! makes it answer late (timeouts).
use std::{convert::Infallible, net::SocketAddr};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

pub async fn run(listen: SocketAddr, name: String) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    tracing::info!(%listen, %name, "http server listening");
    loop {
        let (stream, peer) = listener.accept().await?;
        let name = name.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(req, name.clone(), peer));
            // HTTP/1.1 and h2c (prior knowledge), as a gRPC-style backend takes them.
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    req: Request<Incoming>,
    name: String,
    peer: SocketAddr,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let delay_ms = req
        .uri()
        .query()
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|p| p.strip_prefix("delay_ms="))
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(ms) = delay_ms {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.into())))
        .collect();
    let body = serde_json::json!({
        "service": name,
        "path": req.uri().path(),
        "peer": peer.to_string(),
        "headers": headers,
        "version": format!("{:?}", req.version()),
    });
    let mut response = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
