//! Talking to mailbeacon's API the way a CRM would: create a user, follow emails
//! with `"deliver": "return"`, pull the pixel and click URLs out of the returned
//! per-recipient copies (decoded with mail-parser, as the integration tests do),
//! and afterwards read each email's engagement report to count what was recorded.
//!
//! Nothing is minted here: every URL the load uses is one the server put into a
//! copy, so the load exercises exactly what recipients' mail clients would.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::procs::Result;

/// How much to prepare: `emails` followed emails × `recipients` each, `links`
/// tracked links per email.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub emails: usize,
    pub recipients: usize,
    pub links: usize,
}

pub struct Recipient {
    pub address: String,
    /// Path of the open pixel (`/o/….gif`).
    pub pixel: String,
    /// Paths of the click links (`/c/…/…`), in document order.
    pub clicks: Vec<String>,
}

pub struct Email {
    pub id: String,
    pub recipients: Vec<Recipient>,
}

pub struct Prepared {
    pub user_token: String,
    pub emails: Vec<Email>,
}

/// Recorded (opens, clicks) of one recipient, human and machine activity together.
pub type Recorded = (u64, u64);

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .redirects(0)
        .timeout(Duration::from_secs(120))
        .build()
}

/// One API call with a bearer token; the answer's JSON.
pub fn call(method: &str, url: &str, token: &str, body: Option<Value>) -> Result<Value> {
    let req = agent()
        .request(method, url)
        .set("Authorization", &format!("Bearer {token}"));
    let res = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    match res {
        Ok(r) => r
            .into_json::<Value>()
            .map_err(|e| format!("{method} {url}: bad JSON: {e}")),
        Err(ureq::Error::Status(s, r)) => Err(format!(
            "{method} {url}: {s} {}",
            r.into_string().unwrap_or_default()
        )),
        Err(e) => Err(format!("{method} {url}: {e}")),
    }
}

/// The store a running server says it uses (`/healthz`: "embedded", "redis", …).
pub fn store_kind(base: &str) -> Result<String> {
    let v: Value = agent()
        .get(&format!("{base}/healthz"))
        .call()
        .map_err(|e| format!("GET /healthz: {e}"))?
        .into_json()
        .map_err(|e| format!("GET /healthz: {e}"))?;
    Ok(v["store"].as_str().unwrap_or("unknown").to_owned())
}

/// One HTML email from `from` to `to`, with `links` tracked links.
pub fn newsletter(from: &str, to: &[String], links: usize, n: usize) -> String {
    // Fold the To header: one address per line keeps every line short.
    let to_header = to.join(",\r\n ");
    let anchors: String = (0..links)
        .map(|k| {
            format!("<p><a href=\"https://www.example.com/articles/{k}?issue={n}&amp;utm_source=email\">Article {k}</a></p>\r\n")
        })
        .collect();
    format!(
        "From: Load Test <{from}>\r\nTo: {to_header}\r\nSubject: Load test issue {n}\r\n\
Message-ID: <loadtest-{n}-{}@loadtest.example>\r\nMIME-Version: 1.0\r\n\
Content-Type: text/html; charset=utf-8\r\n\r\n\
<html><body><h1>Issue {n}</h1>\r\n{anchors}<p>Bye</p></body></html>\r\n",
        to.len()
    )
}

/// Creates a user and follows `shape.emails` emails; returns their URLs.
pub fn prepare(base: &str, admin: &str, shape: Shape, tag: &str) -> Result<Prepared> {
    let sender = format!("sender-{tag}@loadtest.example");
    let user = call(
        "POST",
        &format!("{base}/api/v1/users"),
        admin,
        Some(json!({"email": sender, "role": "user"})),
    )?;
    let token = user["token"]
        .as_str()
        .ok_or("POST /api/v1/users: no token in the answer")?
        .to_owned();
    let mut emails = Vec::with_capacity(shape.emails);
    for n in 0..shape.emails {
        let to: Vec<String> = (0..shape.recipients)
            .map(|r| format!("r{r}-{n}-{tag}@loadtest.example"))
            .collect();
        let raw = newsletter(&sender, &to, shape.links, n);
        let v = call(
            "POST",
            &format!("{base}/api/v1/emails"),
            &token,
            Some(json!({"mime": STANDARD.encode(raw), "deliver": "return"})),
        )?;
        emails.push(parse_followed(&v, base, shape)?);
    }
    Ok(Prepared {
        user_token: token,
        emails,
    })
}

fn parse_followed(v: &Value, base: &str, shape: Shape) -> Result<Email> {
    let id = v["id"].as_str().ok_or("no email id")?.to_owned();
    let list = v["recipients"].as_array().ok_or("no recipients")?;
    let mut recipients = Vec::with_capacity(list.len());
    for r in list {
        if r["followed"] != Value::Bool(true) {
            return Err(format!("recipient not followed: {r}"));
        }
        let raw = STANDARD
            .decode(r["mime"].as_str().ok_or("no mime in a copy")?)
            .map_err(|e| format!("copy is not base64: {e}"))?;
        let msg = mail_parser::MessageParser::default()
            .parse(&raw)
            .ok_or("a copy does not parse")?;
        let html = msg.body_html(0).ok_or("a copy has no HTML")?;
        let pixel = find_all(&html, &format!("{base}/o/"), ".gif")
            .into_iter()
            .next()
            .ok_or("no pixel in a copy")?;
        let clicks = find_all(&html, &format!("{base}/c/"), "\"");
        if clicks.len() != shape.links {
            return Err(format!(
                "expected {} click links in a copy, found {}",
                shape.links,
                clicks.len()
            ));
        }
        recipients.push(Recipient {
            address: r["address"].as_str().unwrap_or("").to_owned(),
            pixel: format!("{}.gif", &pixel[base.len()..]),
            clicks: clicks.iter().map(|c| c[base.len()..].to_owned()).collect(),
        });
    }
    Ok(Email { id, recipients })
}

/// Every substring of `hay` from `start` up to (excluding) `end`.
fn find_all(hay: &str, start: &str, end: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = hay;
    while let Some(i) = rest.find(start) {
        let tail = &rest[i..];
        let j = tail.find(end).unwrap_or(tail.len());
        out.push(tail[..j].to_owned());
        rest = &tail[j..];
    }
    out
}

/// What each recipient of each email has recorded, from `GET /api/v1/emails/{id}`
/// (`opens + machine_opens`, `clicks + machine_clicks`).
pub fn recorded(base: &str, prep: &Prepared) -> Result<Vec<Vec<Recorded>>> {
    let mut out = Vec::with_capacity(prep.emails.len());
    for e in &prep.emails {
        let v = call(
            "GET",
            &format!("{base}/api/v1/emails/{}", e.id),
            &prep.user_token,
            None,
        )?;
        let list = v["recipients"]
            .as_array()
            .ok_or_else(|| format!("report of {} has no recipients", e.id))?;
        let mut per = Vec::with_capacity(e.recipients.len());
        for r in &e.recipients {
            let got = list
                .iter()
                .find(|x| x["address"].as_str() == Some(r.address.as_str()))
                .ok_or_else(|| format!("{} missing from the report of {}", r.address, e.id))?;
            let n = |k: &str| got[k].as_u64().unwrap_or(0);
            per.push((
                n("opens") + n("machine_opens"),
                n("clicks") + n("machine_clicks"),
            ));
        }
        out.push(per);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_url() {
        let html = r#"<a href="http://h/c/T1/ZA">x</a><a href="http://h/c/T2/ZB">y</a><img src="http://h/o/P.gif">"#;
        assert_eq!(
            find_all(html, "http://h/c/", "\""),
            ["http://h/c/T1/ZA", "http://h/c/T2/ZB"]
        );
        assert_eq!(find_all(html, "http://h/o/", ".gif"), ["http://h/o/P"]);
    }

    #[test]
    fn newsletter_parses_with_every_recipient_and_link() {
        let to: Vec<String> = (0..60).map(|i| format!("r{i}@x.example")).collect();
        let raw = newsletter("s@x.example", &to, 7, 1);
        let msg = mail_parser::MessageParser::default()
            .parse(raw.as_bytes())
            .unwrap();
        assert_eq!(msg.to().map(|a| a.iter().count()), Some(60));
        assert_eq!(msg.body_html(0).unwrap().matches("<a href").count(), 7);
        assert!(raw.lines().all(|l| l.len() < 998));
    }
}
