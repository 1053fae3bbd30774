//! The generic workload's WebSocket echo: a request asking for `Upgrade: websocket` gets
//! `101 Switching Protocols` with its `Sec-WebSocket-Accept`, then every text or binary
//! message it sends comes back unchanged (tokio-tungstenite does the framing, pings and
//! the close handshake).
use futures_util::{SinkExt, StreamExt};
use hyper::{Request, StatusCode, body::Incoming, header};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{handshake::derive_accept_key, protocol::Role},
};

use super::serve::{self, Reply};

pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        req.headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|v| v.trim().eq_ignore_ascii_case(token))
    };
    has(header::UPGRADE, "websocket") && has(header::CONNECTION, "upgrade")
}

/// Answers the handshake and echoes on the upgraded connection in a task of its own.
pub fn accept(req: &mut Request<Incoming>) -> Reply {
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return serve::reply(400, "text/plain", "Sec-WebSocket-Key missing\n");
    };
    let accept = derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let socket =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None)
                        .await;
                echo(socket).await;
            }
            Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
        }
    });
    let mut reply = serve::reply(101, "text/plain", bytes::Bytes::new());
    *reply.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = reply.headers_mut();
    headers.remove(header::CONTENT_TYPE);
    headers.insert(
        header::UPGRADE,
        header::HeaderValue::from_static("websocket"),
    );
    headers.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("Upgrade"),
    );
    if let Ok(value) = accept.parse() {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, value);
    }
    reply
}

async fn echo<S>(mut socket: WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    while let Some(Ok(message)) = socket.next().await {
        if (message.is_text() || message.is_binary()) && socket.send(message).await.is_err() {
            return;
        }
    }
}
