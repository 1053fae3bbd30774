//! `mesh-agent app ratings`: Bookinfo's ratings service (image
//! `examples-bookinfo-ratings-v1`): `GET /ratings/<id>` answers the two reviewers' stars,
//! `GET /health` its health.
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
        return serve::json(200, &json!({"status": "Ratings is healthy"}));
    }
    match path.strip_prefix("/ratings/").map(str::parse::<i64>) {
        Some(Ok(id)) => serve::json(
            200,
            &json!({"id": id, "ratings": {"Reviewer1": 5, "Reviewer2": 4}}),
        ),
        Some(Err(_)) => serve::json(400, &json!({"error": "please provide numeric product ID"})),
        None => serve::json(404, &json!({"error": "Not Found"})),
    }
}
