//! `mesh-agent app reviews`: Bookinfo's reviews service (images
//! `examples-bookinfo-reviews-v1`, `-v2`, `-v3`): `GET /reviews/<id>` answers two reviews
//! and the name of the pod that served them; v2 and v3 ask `http://ratings:9080` for the
//! stars (v2 black, v3 red), forwarding the user and trace headers, and answer "Ratings
//! service is currently unavailable" in place of the stars when that call fails. Its
//! timeouts are the original's: 10 s for v2, 2.5 s for v3 (the fault-injection tasks
//! depend on them).
use std::{net::SocketAddr, sync::Arc, time::Duration};

use hyper::{Method, Request, body::Incoming};
use serde_json::{Value, json};

use super::serve::{self, Reply};
use super::upstream;

const RATINGS_HOST: &str = "ratings";
const RATINGS_PORT: u16 = 9080;

/// The stars a reviews version shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Stars {
    /// v1: no ratings call, no stars.
    None,
    /// v2.
    Black,
    /// v3.
    Red,
}

impl Stars {
    fn color(self) -> Option<&'static str> {
        match self {
            Stars::None => None,
            Stars::Black => Some("black"),
            Stars::Red => Some("red"),
        }
    }

    /// How long the ratings call may take.
    fn ratings_timeout(self) -> Duration {
        match self {
            Stars::Black => Duration::from_millis(10_000),
            _ => Duration::from_millis(2_500),
        }
    }
}

const REVIEWS: [(&str, &str); 2] = [
    (
        "Reviewer1",
        "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!",
    ),
    (
        "Reviewer2",
        "Absolutely fun and entertaining. The play lacks thematic depth when compared to other plays by Shakespeare.",
    ),
];

pub async fn run(listen: Vec<SocketAddr>, pod: String, stars: Stars) -> std::io::Result<()> {
    let pod: Arc<str> = pod.into();
    super::serve_all(listen, move |req, _| {
        let pod = pod.clone();
        async move { answer(req, &pod, stars).await }
    })
    .await
}

async fn answer(req: Request<Incoming>, pod: &str, stars: Stars) -> Reply {
    if req.method() != Method::GET {
        return serve::json(405, &json!({"error": "method not allowed"}));
    }
    let path = req.uri().path();
    if path == "/health" {
        return serve::json(200, &json!({"status": "Reviews is healthy"}));
    }
    let Some(id) = path.strip_prefix("/reviews/") else {
        return serve::json(404, &json!({"error": "Not Found"}));
    };
    let Ok(id) = id.parse::<i64>() else {
        return serve::json(400, &json!({"error": "please provide numeric product id"}));
    };
    let ratings = match stars.color() {
        None => None,
        Some(_) => {
            let headers = upstream::forwarded_headers(req.headers());
            let path = format!("/ratings/{id}");
            let answer = upstream::get(
                RATINGS_HOST,
                RATINGS_PORT,
                &path,
                &headers,
                stars.ratings_timeout(),
            )
            .await;
            Some(match answer {
                Ok(a) => a.json(),
                Err(e) => {
                    tracing::info!(error = %e, "ratings call failed");
                    None
                }
            })
        }
    };
    serve::json(200, &reviews(id, pod, stars, ratings.as_ref()))
}

/// The reviews document: `ratings` is `None` for v1 (never asked), `Some(None)` when the
/// ratings call failed.
pub fn reviews(id: i64, pod: &str, stars: Stars, ratings: Option<&Option<Value>>) -> Value {
    let list: Vec<Value> = REVIEWS
        .iter()
        .map(|(reviewer, text)| {
            let mut review = json!({"reviewer": reviewer, "text": text});
            if let (Some(color), Some(ratings)) = (stars.color(), ratings) {
                review["rating"] = match ratings
                    .as_ref()
                    .and_then(|r| r["ratings"][reviewer].as_i64())
                {
                    Some(n) => json!({"stars": n, "color": color}),
                    None => json!({"error": "Ratings service is currently unavailable"}),
                };
            }
            review
        })
        .collect();
    json!({"id": id.to_string(), "podname": pod, "clustername": "null", "reviews": list})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_has_no_ratings_v2_black_v3_red_and_a_failed_call_says_so() {
        let v1 = reviews(0, "reviews-v1-x", Stars::None, None);
        assert!(v1["reviews"][0].get("rating").is_none());
        assert_eq!(v1["podname"], "reviews-v1-x");

        let ratings = Some(json!({"id": 0, "ratings": {"Reviewer1": 5, "Reviewer2": 4}}));
        let v2 = reviews(0, "p", Stars::Black, Some(&ratings));
        assert_eq!(
            v2["reviews"][0]["rating"],
            json!({"stars": 5, "color": "black"})
        );
        assert_eq!(
            v2["reviews"][1]["rating"],
            json!({"stars": 4, "color": "black"})
        );
        let v3 = reviews(0, "p", Stars::Red, Some(&ratings));
        assert_eq!(v3["reviews"][0]["rating"]["color"], "red");

        let failed = reviews(0, "p", Stars::Red, Some(&None));
        assert_eq!(
            failed["reviews"][0]["rating"]["error"],
            "Ratings service is currently unavailable"
        );
    }
}
