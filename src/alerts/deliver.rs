//! Sending one request to a route: a 10 s timeout, at most 3 tries within 60 s (bounded
//! exponential backoff, on a network error, a 5xx or a 429), and nothing of the URL or the
//! receiver's answer beyond 200 bytes in what is said about it.

use std::time::Duration;

use super::routes::Route;

/// Each request's limit, connection included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The most tries of one delivery.
const TRIES: u32 = 3;
/// The pause before the second try; each later pause is 4 times the one before.
const FIRST_PAUSE: Duration = Duration::from_secs(1);
/// All tries of one delivery together.
pub const DELIVERY_DEADLINE: Duration = Duration::from_secs(60);
/// How much of a receiver's answer is kept.
const ANSWER_BYTES: usize = 200;

/// What a receiver answered.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// The start of its body (at most 200 bytes, as text).
    pub body: String,
    /// The tries it took.
    pub tries: u32,
}

/// The HTTP client alerts share: no redirects (a body signed for one receiver is not sent to
/// another), rustls on ring as the rest of batchscore.
pub fn client() -> anyhow::Result<reqwest::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("batchscore/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// POST `body` to the route, retried as the module says. The error names the route and what
/// went wrong, never its URL.
pub async fn post(
    client: &reqwest::Client,
    route: &Route,
    body: Vec<u8>,
    headers: &[(&str, String)],
) -> Result<Answer, String> {
    let attempt = async {
        let mut pause = FIRST_PAUSE;
        let mut tries = 0;
        loop {
            tries += 1;
            let outcome = send_once(client, route, body.clone(), headers).await;
            let retry = match &outcome {
                Ok(answer) => answer.status >= 500 || answer.status == 429,
                Err(_) => true,
            };
            if !retry || tries == TRIES {
                return match outcome {
                    Ok(answer) if answer.status < 300 => Ok(Answer { tries, ..answer }),
                    Ok(answer) => Err(format!(
                        "route `{}` answered HTTP {} after {tries} tries: {}",
                        route.name, answer.status, answer.body
                    )),
                    Err(problem) => Err(format!(
                        "route `{}` could not be reached after {tries} tries: {problem}",
                        route.name
                    )),
                };
            }
            tokio::time::sleep(pause).await;
            pause *= 4;
        }
    };
    match tokio::time::timeout(DELIVERY_DEADLINE, attempt).await {
        Ok(outcome) => outcome,
        Err(_) => Err(format!(
            "route `{}` was given up after {}s",
            route.name,
            DELIVERY_DEADLINE.as_secs()
        )),
    }
}

async fn send_once(
    client: &reqwest::Client,
    route: &Route,
    body: Vec<u8>,
    headers: &[(&str, String)],
) -> Result<Answer, String> {
    let mut request = client
        .post(route.url.expose())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.map_err(describe)?;
    let status = response.status().as_u16();
    // Read no more of the answer than is kept, within the request's own time.
    let mut kept = Vec::new();
    let mut response = response;
    while kept.len() < ANSWER_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => kept.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    kept.truncate(ANSWER_BYTES);
    Ok(Answer {
        status,
        body: String::from_utf8_lossy(&kept).into_owned(),
        tries: 1,
    })
}

/// A request's failure without its URL (which may hold a token), with its causes.
fn describe(err: reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let err = err.without_url();
    let mut text = kind.to_owned();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
