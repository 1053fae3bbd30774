//! `mesh-agent app productpage`: Bookinfo's product page (image
//! `examples-bookinfo-productpage-v1`). `GET /productpage` calls `http://details:9080` and
//! `http://reviews:9080` by name, forwarding the user and trace headers, and renders the
//! page ([`super::page`]); a failed or late call shows Bookinfo's "Sorry, ... unavailable"
//! text in its place. Its client timeouts are the original's, which Istio's
//! fault-injection task depends on: details 3 s; reviews 3 s, tried twice (6 s).
//! `POST /login` (form field `username`) sets a `user` cookie, and the page then sends
//! `end-user: <user>` to details and reviews; `GET /logout` clears it. Also `/` (a link to
//! the page), `/api/v1/products[/<id>[/reviews|/ratings]]`, `/static/...` and `/health`.
use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::{HeaderMap, Method, Request, body::Incoming, header};
use serde_json::{Value, json};

use super::page;
use super::serve::{self, Reply};
use super::upstream;

const DETAILS: (&str, u16) = ("details", 9080);
const REVIEWS: (&str, u16) = ("reviews", 9080);
const DETAILS_TIMEOUT: Duration = Duration::from_secs(3);
const REVIEWS_TIMEOUT: Duration = Duration::from_secs(3);
/// Bookinfo's productpage tries reviews twice (a bug kept on purpose for the
/// fault-injection task: 3 s + one retry is the 6 s Istio's docs speak of).
const REVIEWS_ATTEMPTS: usize = 2;
/// A login form is a few dozen bytes.
const FORM_LIMIT: usize = 16 * 1024;
const USER_COOKIE: &str = "user";

pub async fn run(listen: Vec<SocketAddr>) -> std::io::Result<()> {
    super::serve_all(listen, |req, _| answer(req)).await
}

async fn answer(req: Request<Incoming>) -> Reply {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    match (method, path.as_str()) {
        (Method::GET, "/health") => serve::json(200, &json!({"status": "Product page is healthy"})),
        (Method::GET, "/" | "/index.html") => {
            serve::reply(200, "text/html; charset=utf-8", page::INDEX)
        }
        (Method::GET, "/productpage") => product_page(req.headers()).await,
        (Method::POST, "/login") => login(req).await,
        (Method::GET, "/logout") => redirect_setting_user(None),
        (Method::GET, "/static/style.css") => serve::reply(200, "text/css", page::STYLE),
        (Method::GET, p) if p.starts_with("/api/v1/products") => api(p, req.headers()).await,
        _ => serve::reply(404, "text/plain", "Not Found\n"),
    }
}

async fn product_page(incoming: &HeaderMap) -> Reply {
    let user = user(incoming);
    let headers = outbound_headers(incoming, user.as_deref());
    let (details, reviews) = tokio::join!(details(&headers), reviews(&headers));
    let html = page::render(&page::Page {
        user: user.as_deref(),
        details: details.as_ref(),
        reviews: reviews.as_ref(),
    });
    serve::reply(200, "text/html; charset=utf-8", html)
}

/// `/api/v1/products`, `/api/v1/products/<id>`, `.../reviews`, `.../ratings`.
async fn api(path: &str, incoming: &HeaderMap) -> Reply {
    let rest = path
        .trim_start_matches("/api/v1/products")
        .trim_matches('/');
    if rest.is_empty() {
        return serve::json(200, &json!([page::product()]));
    }
    let (id, what) = rest.split_once('/').unwrap_or((rest, ""));
    if id.parse::<i64>().is_err() {
        return serve::json(400, &json!({"error": "please provide numeric product id"}));
    }
    let headers = outbound_headers(incoming, user(incoming).as_deref());
    let failed = |what: &str| {
        serve::json(
            503,
            &json!({"error": format!("Sorry, product {what} are currently unavailable for this book.")}),
        )
    };
    match what {
        "" => details(&headers)
            .await
            .map_or_else(|| failed("details"), |d| serve::json(200, &d)),
        "reviews" => reviews(&headers)
            .await
            .map_or_else(|| failed("reviews"), |r| serve::json(200, &r)),
        "ratings" => {
            let answer =
                upstream::get("ratings", 9080, "/ratings/0", &headers, REVIEWS_TIMEOUT).await;
            match answer.ok().and_then(|a| a.json()) {
                Some(r) => serve::json(200, &r),
                None => failed("ratings"),
            }
        }
        _ => serve::reply(404, "text/plain", "Not Found\n"),
    }
}

async fn details(headers: &HeaderMap) -> Option<Value> {
    let (host, port) = DETAILS;
    match upstream::get(host, port, "/details/0", headers, DETAILS_TIMEOUT).await {
        Ok(answer) => answer.json(),
        Err(e) => {
            tracing::info!(error = %e, "details call failed");
            None
        }
    }
}

async fn reviews(headers: &HeaderMap) -> Option<Value> {
    let (host, port) = REVIEWS;
    for _ in 0..REVIEWS_ATTEMPTS {
        match upstream::get(host, port, "/reviews/0", headers, REVIEWS_TIMEOUT).await {
            Ok(answer) => {
                if let Some(json) = answer.json() {
                    return Some(json);
                }
            }
            Err(e) => tracing::info!(error = %e, "reviews call failed"),
        }
    }
    None
}

/// The incoming trace headers, and `end-user` when someone is logged in.
fn outbound_headers(incoming: &HeaderMap, user: Option<&str>) -> HeaderMap {
    let mut headers = upstream::forwarded_headers(incoming);
    headers.remove("end-user");
    if let Some(value) = user.and_then(|u| u.parse().ok()) {
        headers.insert("end-user", value);
    }
    headers
}

/// The logged-in user, from the `user` cookie.
fn user(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == USER_COOKIE)
        .map(|(_, value)| value.to_string())
        .filter(|u| valid_user(u))
}

/// Names that go into a cookie and a header unescaped.
fn valid_user(user: &str) -> bool {
    !user.is_empty()
        && user.len() <= 64
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
}

async fn login(req: Request<Incoming>) -> Reply {
    let body = match Limited::new(req.into_body(), FORM_LIMIT).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return serve::reply(413, "text/plain", "login form too large\n"),
    };
    match form_field(&body, "username").filter(|u| valid_user(u)) {
        Some(user) => redirect_setting_user(Some(&user)),
        None => serve::reply(
            400,
            "text/plain",
            "user names are letters, digits and - _ . @\n",
        ),
    }
}

/// 302 to the product page, setting or clearing the user cookie.
fn redirect_setting_user(user: Option<&str>) -> Reply {
    let cookie = match user {
        Some(u) => format!("{USER_COOKIE}={u}; Path=/"),
        None => format!("{USER_COOKIE}=; Path=/; Max-Age=0"),
    };
    let mut reply = serve::reply(302, "text/plain", Bytes::new());
    let headers = reply.headers_mut();
    headers.insert(
        header::LOCATION,
        header::HeaderValue::from_static("/productpage"),
    );
    if let Ok(value) = cookie.parse() {
        headers.insert(header::SET_COOKIE, value);
    }
    reply
}

/// One field of an `application/x-www-form-urlencoded` body, decoded.
fn form_field(body: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    text.split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| percent_decode(v))
}

fn percent_decode(value: &str) -> Option<String> {
    let mut out = Vec::with_capacity(value.len());
    let mut bytes = value.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = [bytes.next()?, bytes.next()?];
                let hex = std::str::from_utf8(&hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
            }
            _ => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_login_form_and_the_cookie_give_the_end_user() {
        assert_eq!(
            form_field(b"username=jason&passwd=x%20y", "username").as_deref(),
            Some("jason")
        );
        assert_eq!(
            form_field(b"passwd=a+b%21", "passwd").as_deref(),
            Some("a b!")
        );
        assert_eq!(form_field(b"passwd=%zz", "passwd"), None);

        let mut incoming = HeaderMap::new();
        incoming.insert(header::COOKIE, "theme=dark; user=jason".parse().unwrap());
        incoming.insert("end-user", "mallory".parse().unwrap());
        incoming.insert("x-request-id", "r1".parse().unwrap());
        let user = user(&incoming);
        assert_eq!(user.as_deref(), Some("jason"));
        let out = outbound_headers(&incoming, user.as_deref());
        assert_eq!(out["end-user"], "jason");
        assert_eq!(out["x-request-id"], "r1");
        assert!(out.get(header::COOKIE).is_none());

        // Nobody logged in: a client's own end-user header is not passed on.
        let mut anonymous = HeaderMap::new();
        anonymous.insert("end-user", "mallory".parse().unwrap());
        assert!(outbound_headers(&anonymous, None).get("end-user").is_none());

        let mut bad = HeaderMap::new();
        bad.insert(header::COOKIE, "user=<script>".parse().unwrap());
        assert_eq!(super::user(&bad), None);
    }
}
