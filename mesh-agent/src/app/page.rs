//! The product page's HTML: the book, its details and its reviews as Bookinfo shows them
//! (v1 no stars, v2 black stars, v3 red stars, and the name of the pod that served the
//! reviews), or Bookinfo's "Sorry, ..." line where a call failed. Pure: a function of what
//! details and reviews answered, so it is unit-tested without sockets.
use std::fmt::Write as _;

use serde_json::{Value, json};

pub const TITLE: &str = "The Comedy of Errors";
pub const DETAILS_UNAVAILABLE: &str =
    "Sorry, product details are currently unavailable for this book.";
pub const REVIEWS_UNAVAILABLE: &str =
    "Sorry, product reviews are currently unavailable for this book.";
const SUMMARY: &str = "<a href=\"https://en.wikipedia.org/wiki/The_Comedy_of_Errors\">Wikipedia Summary</a>: The Comedy of Errors is one of <b>William Shakespeare's</b> early plays. It is his shortest and one of his most farcical comedies, with a major part of the humour coming from slapstick and mistaken identity, in addition to puns and word play.";

pub const INDEX: &str = "<!DOCTYPE html>\n<html><head><title>Simple Bookstore App</title>\
<link rel=\"stylesheet\" href=\"/static/style.css\"></head><body>\n\
<h1>Hello! This is a simple bookstore application consisting of three services as shown below</h1>\n\
<p><a href=\"/productpage\">Normal user</a> &middot; <a href=\"/productpage?u=test\">Test user</a></p>\n\
</body></html>\n";

pub const STYLE: &str = "body { font-family: sans-serif; margin: 0; }\n\
nav { background: #2c3e50; color: #fff; padding: 0.6em 1em; display: flex; justify-content: space-between; }\n\
nav form { display: inline; } main { padding: 1em 2em; }\n\
.columns { display: flex; gap: 3em; } .columns section { flex: 1; }\n\
blockquote { border-left: 4px solid #ccc; margin: 1em 0; padding: 0.2em 1em; }\n\
.stars { font-size: 1.3em; } .served-by { color: #666; font-size: 0.9em; }\n\
.error { color: #a00; }\n";

/// The product as `/api/v1/products` lists it.
pub fn product() -> Value {
    json!({"id": 0, "title": TITLE, "descriptionHtml": SUMMARY})
}

/// What the page shows: the user (if logged in) and what each call answered (`None`:
/// failed or late).
pub struct Page<'a> {
    pub user: Option<&'a str>,
    pub details: Option<&'a Value>,
    pub reviews: Option<&'a Value>,
}

pub fn render(page: &Page) -> String {
    let mut html = String::with_capacity(4096);
    html.push_str("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">");
    let _ = write!(html, "<title>Simple Bookstore App</title>");
    html.push_str("<link rel=\"stylesheet\" href=\"/static/style.css\"></head><body>\n<nav><span>BookInfo Sample</span>");
    match page.user {
        Some(user) => {
            let _ = write!(
                html,
                "<span>{} <a href=\"/logout\">sign out</a></span>",
                escape(user)
            );
        }
        None => html.push_str(
            "<form method=\"post\" action=\"/login\"><input name=\"username\" placeholder=\"User Name\"> \
             <input name=\"passwd\" type=\"password\" placeholder=\"Password\"> \
             <button type=\"submit\">Sign in</button></form>",
        ),
    }
    html.push_str("</nav>\n<main>\n");
    let _ = writeln!(
        html,
        "<h1 class=\"title\">{}</h1>\n<p>{SUMMARY}</p>",
        escape(TITLE)
    );
    html.push_str("<div class=\"columns\">\n<section class=\"details\">\n<h2>Book Details</h2>\n");
    match page.details {
        Some(details) => render_details(&mut html, details),
        None => {
            let _ = writeln!(html, "<p class=\"error\">{DETAILS_UNAVAILABLE}</p>");
        }
    }
    html.push_str("</section>\n<section class=\"reviews\">\n<h2>Book Reviews</h2>\n");
    match page.reviews {
        Some(reviews) => render_reviews(&mut html, reviews),
        None => {
            let _ = writeln!(html, "<p class=\"error\">{REVIEWS_UNAVAILABLE}</p>");
        }
    }
    html.push_str("</section>\n</div>\n</main>\n</body></html>\n");
    html
}

fn render_details(html: &mut String, details: &Value) {
    html.push_str("<dl>\n");
    for (label, key) in [
        ("Author", "author"),
        ("Year", "year"),
        ("Type", "type"),
        ("Pages", "pages"),
        ("Publisher", "publisher"),
        ("Language", "language"),
        ("ISBN-10", "ISBN-10"),
        ("ISBN-13", "ISBN-13"),
    ] {
        let value = match &details[key] {
            Value::String(s) => s.clone(),
            Value::Null => continue,
            other => other.to_string(),
        };
        let _ = writeln!(html, "<dt>{label}:</dt><dd>{}</dd>", escape(&value));
    }
    html.push_str("</dl>\n");
}

fn render_reviews(html: &mut String, reviews: &Value) {
    for review in reviews["reviews"].as_array().into_iter().flatten() {
        let text = review["text"].as_str().unwrap_or_default();
        let reviewer = review["reviewer"].as_str().unwrap_or_default();
        let _ = write!(
            html,
            "<blockquote><p>{}</p><small>{}</small>",
            escape(text),
            escape(reviewer)
        );
        let rating = &review["rating"];
        if let Some(error) = rating["error"].as_str() {
            let _ = write!(html, "<p class=\"error\">{}</p>", escape(error));
        } else if let Some(stars) = rating["stars"].as_u64() {
            // Only the two colours Bookinfo's reviews use reach the page.
            let color = match rating["color"].as_str() {
                Some("red") => "red",
                _ => "black",
            };
            let filled = stars.min(5) as usize;
            let _ = write!(
                html,
                "<p class=\"stars\" style=\"color: {color}\" data-color=\"{color}\">{}{}</p>",
                "&#9733;".repeat(filled),
                "&#9734;".repeat(5 - filled)
            );
        }
        html.push_str("</blockquote>\n");
    }
    if let Some(pod) = reviews["podname"].as_str() {
        let _ = writeln!(
            html,
            "<p class=\"served-by\">Reviews served by: <b>{}</b></p>",
            escape(pod)
        );
    }
}

/// HTML text escaping: what the page shows comes from other services.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::{details, reviews};

    #[test]
    fn the_page_shows_details_reviews_stars_and_the_serving_pod() {
        let details = details::details(0);
        let ratings = Some(json!({"ratings": {"Reviewer1": 5, "Reviewer2": 4}}));
        let reviews = reviews::reviews(
            0,
            "reviews-v3-7d9c-abcde",
            reviews::Stars::Red,
            Some(&ratings),
        );
        let html = render(&Page {
            user: Some("jason"),
            details: Some(&details),
            reviews: Some(&reviews),
        });
        assert!(html.contains("<h1 class=\"title\">The Comedy of Errors</h1>"));
        assert!(
            html.contains("<dd>William Shakespeare</dd>") && html.contains("<dd>1234567890</dd>")
        );
        assert!(html.contains("Book Reviews"));
        assert!(html.contains("style=\"color: red\""));
        assert!(html.contains("&#9733;&#9733;&#9733;&#9733;&#9734;"));
        assert!(html.contains("Reviews served by: <b>reviews-v3-7d9c-abcde</b>"));
        assert!(html.contains("jason <a href=\"/logout\">"));

        let v1 = reviews::reviews(0, "reviews-v1-x", reviews::Stars::None, None);
        let html = render(&Page {
            user: None,
            details: None,
            reviews: Some(&v1),
        });
        assert!(!html.contains("class=\"stars\""));
        assert!(html.contains(DETAILS_UNAVAILABLE));
        assert!(html.contains("action=\"/login\""));

        let html = render(&Page {
            user: None,
            details: Some(&details),
            reviews: None,
        });
        assert!(html.contains(REVIEWS_UNAVAILABLE));
    }

    #[test]
    fn text_from_other_services_is_escaped() {
        assert_eq!(
            escape("<b>\"x\" & 'y'</b>"),
            "&lt;b&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/b&gt;"
        );
    }
}
