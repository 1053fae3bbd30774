//! `mesh-agent app details`: Bookinfo's details service (image
//! `examples-bookinfo-details-v1`): `GET /details/<id>` answers the book's details as JSON,
//! `GET /health` its health, as the original does.
use std::net::SocketAddr;

use hyper::{Method, Request, body::Incoming};
use serde_json::json;

use super::serve::{self, Reply};

pub async fn run(listen: Vec<SocketAddr>) -> std::io::Result<()> {
    super::serve_all(listen, |req, _| async move { answer(&req) }).await
}

fn answer(req: &Request<Incoming>) -> Reply {
    if req.method() != Method::GET {
        return serve::json(405, &json!({"error": "method not allowed"}));
    }
    let path = req.uri().path();
    if path == "/health" {
        return serve::json(200, &json!({"status": "Details is healthy"}));
    }
    match path.strip_prefix("/details/").map(str::parse::<i64>) {
        Some(Ok(id)) => serve::json(200, &details(id)),
        Some(Err(_)) => serve::json(400, &json!({"error": "please provide numeric product id"})),
        None => serve::json(404, &json!({"error": "Not Found"})),
    }
}

/// The one book Bookinfo knows, under any id.
pub fn details(id: i64) -> serde_json::Value {
    json!({
        "id": id,
        "author": "William Shakespeare",
        "year": 1595,
        "type": "paperback",
        "pages": 200,
        "publisher": "PublisherA",
        "language": "English",
        "ISBN-10": "1234567890",
        "ISBN-13": "123-1234567890",
    })
}
