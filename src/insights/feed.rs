//! Outside insights (issue #14): company news about the domains of a user's
//! contacts, from a provider the operator configures. [`NewsProvider`] is the
//! interface; [`JsonFeed`] its one implementation, which reads a JSON feed from
//! `MAILBEACON_INSIGHTS_FEED_URL` every `MAILBEACON_INSIGHTS_FEED_SECS` seconds
//! through `outbound::http` (so the URL obeys the outbound rules: public
//! addresses plus `MAILBEACON_OUTBOUND_ALLOW`) into an in-memory cache.
//! [`news_cards`] turns cached items into `company_news` cards. No provider is
//! built in (Bing News and MSN Money cannot be reached from here and carry terms
//! of their own).
//!
//! The accepted feed (at most [`MAX_FEED_BYTES`] bytes and [`MAX_ITEMS`] items;
//! items with a bad field are skipped, unknown fields ignored):
//! ```json
//! {"items": [{"domain": "example.com", "title": "Example raises a round",
//!             "url": "https://news.example.net/a", "published_at": "2026-12-01T09:00:00Z"}]}
//! ```
//! This module is the only part of `insights` that does I/O (the refresh);
//! parsing and card making are pure.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ring::digest;
use serde::Deserialize;

use super::cards::{card_id, Card, CardKind};
use super::DAY_MS;
use crate::outbound::{http, OutboundError, OutboundPolicy};

/// The largest feed read (larger ones are refused whole).
pub const MAX_FEED_BYTES: usize = 1 << 20;
/// Items kept from one feed (the rest are ignored).
pub const MAX_ITEMS: usize = 1000;
/// Longest accepted title and URL, in bytes.
pub const MAX_TITLE: usize = 300;
pub const MAX_URL: usize = 2000;
/// News older than this is not shown.
pub const NEWS_RECENT_MS: u64 = 7 * DAY_MS;
/// At most this many news cards per domain.
pub const PER_DOMAIN: usize = 3;

/// One news item about a company domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewsItem {
    /// Lower case, no trailing dot.
    pub domain: String,
    pub title: String,
    pub url: String,
    pub published_ms: u64,
}

/// Where news comes from.
pub trait NewsProvider: Send + Sync {
    /// The items known about these (lower-case) domains, newest first.
    fn news_for(&self, domains: &[String]) -> Vec<NewsItem>;
}

#[derive(Deserialize)]
struct RawFeed {
    items: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawItem {
    domain: String,
    title: String,
    url: String,
    published_at: String,
}

fn valid_domain(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 253
        && d.contains('.')
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Parses a feed body (see the module docs); `Err` if it is not such a JSON
/// object at all. Bad items are skipped; at most [`MAX_ITEMS`] are kept.
pub fn parse_feed(body: &[u8]) -> Result<Vec<NewsItem>, &'static str> {
    if body.len() > MAX_FEED_BYTES {
        return Err("feed too large");
    }
    let raw: RawFeed = serde_json::from_slice(body).map_err(|_| "not a JSON feed")?;
    let mut out = Vec::new();
    for v in raw.items.into_iter().take(MAX_ITEMS) {
        let Ok(it) = serde_json::from_value::<RawItem>(v) else {
            continue;
        };
        let domain = it.domain.trim().trim_end_matches('.').to_ascii_lowercase();
        let title = it.title.trim().to_string();
        let url = it.url.trim().to_string();
        let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
        let Some(published_ms) = humantime::parse_rfc3339(it.published_at.trim())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64)
        else {
            continue;
        };
        if !valid_domain(&domain)
            || title.is_empty()
            || title.len() > MAX_TITLE
            || !scheme_ok
            || url.len() > MAX_URL
            || url.chars().any(char::is_control)
            || title.chars().any(char::is_control)
        {
            continue;
        }
        out.push(NewsItem {
            domain,
            title,
            url,
            published_ms,
        });
    }
    Ok(out)
}

/// A JSON feed read from a URL into memory.
pub struct JsonFeed {
    url: String,
    policy: OutboundPolicy,
    every: Duration,
    /// domain → items, newest first.
    cache: RwLock<HashMap<String, Vec<NewsItem>>>,
}

impl JsonFeed {
    pub fn new(url: String, policy: OutboundPolicy, every: Duration) -> JsonFeed {
        JsonFeed {
            url,
            policy,
            every,
            cache: RwLock::new(HashMap::new()),
        }
    }

    /// Fetches the feed once and replaces the cache; on any failure the cache
    /// is kept. Returns how many items are cached.
    pub async fn refresh(&self) -> Result<usize, OutboundError> {
        let limits = http::Limits {
            max_response_bytes: MAX_FEED_BYTES,
            ..http::Limits::default()
        };
        let resp = http::request(
            &self.policy,
            hyper::Method::GET,
            &self.url,
            &[("accept", "application/json".to_string())],
            None,
            limits,
        )
        .await?;
        if resp.status != 200 || resp.truncated {
            return Err(OutboundError::Protocol);
        }
        let items = parse_feed(&resp.body).map_err(|_| OutboundError::Protocol)?;
        let n = items.len();
        let mut by: HashMap<String, Vec<NewsItem>> = HashMap::new();
        for it in items {
            by.entry(it.domain.clone()).or_default().push(it);
        }
        for v in by.values_mut() {
            v.sort_by_key(|b| std::cmp::Reverse(b.published_ms));
        }
        *self.cache.write().unwrap_or_else(|p| p.into_inner()) = by;
        Ok(n)
    }

    /// Refreshes now and then every `every` until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            match self.refresh().await {
                Ok(n) => tracing::debug!(items = n, "insights feed refreshed"),
                Err(e) => tracing::warn!(error = e.code(), "insights feed not refreshed"),
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(self.every) => {}
            }
        }
    }
}

impl NewsProvider for JsonFeed {
    fn news_for(&self, domains: &[String]) -> Vec<NewsItem> {
        let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
        domains
            .iter()
            .filter_map(|d| cache.get(d))
            .flatten()
            .cloned()
            .collect()
    }
}

/// The caller's contacts' domains (domain → distinct contacts there), as the
/// insights endpoint reads their emails.
#[derive(Default)]
pub struct ContactDomains {
    pub domains: BTreeMap<String, usize>,
    seen: std::collections::HashSet<String>,
}

impl ContactDomains {
    /// Counts the recipients of one email.
    pub fn add(&mut self, rec: &crate::model::EmailRecord) {
        for r in &rec.recipients {
            if let Some(d) = domain_of(&r.address) {
                if self.seen.insert(r.address.to_ascii_lowercase()) {
                    *self.domains.entry(d).or_insert(0) += 1;
                }
            }
        }
    }
}

/// The lower-case domain of an address (`None` without an `@`).
pub fn domain_of(address: &str) -> Option<String> {
    let (_, d) = address.rsplit_once('@')?;
    let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
    valid_domain(&d).then_some(d)
}

fn h64(s: &str) -> u64 {
    let d = digest::digest(&digest::SHA256, s.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d.as_ref()[..8]);
    u64::from_be_bytes(b)
}

/// `company_news` cards for `contacts` (domain → how many contacts there):
/// news published in the last [`NEWS_RECENT_MS`] (and not in the future), at
/// most [`PER_DOMAIN`] per domain. Pure.
pub fn news_cards(
    provider: &dyn NewsProvider,
    contacts: &BTreeMap<String, usize>,
    now_ms: u64,
) -> Vec<Card> {
    let domains: Vec<String> = contacts.keys().cloned().collect();
    let mut per: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    for it in provider.news_for(&domains) {
        if it.published_ms > now_ms || now_ms - it.published_ms >= NEWS_RECENT_MS {
            continue;
        }
        let n = per.entry(it.domain.clone()).or_insert(0);
        if *n >= PER_DOMAIN {
            continue;
        }
        *n += 1;
        let count = contacts.get(&it.domain).copied().unwrap_or(0);
        out.push(Card {
            id: card_id(CardKind::CompanyNews, &[h64(&it.domain), h64(&it.url)]),
            kind: CardKind::CompanyNews,
            title: format!("News about {}: {}", it.domain, it.title),
            detail: format!(
                "{} — {} of your contacts {} at {}",
                it.url,
                count,
                if count == 1 { "is" } else { "are" },
                it.domain
            ),
            at: it.published_ms,
            email_id: None,
            contact: None,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_796_112_000_000; // 2026-12-01T08:00:00Z

    fn feed() -> &'static [u8] {
        br#"{"items":[
            {"domain":"Example.COM.","title":"Example raises a round","url":"https://news.test/a","published_at":"2026-12-01T07:00:00Z"},
            {"domain":"example.com","title":"Old news","url":"https://news.test/old","published_at":"2026-10-01T07:00:00Z"},
            {"domain":"other.org","title":"Other","url":"https://news.test/o","published_at":"2026-12-01T06:00:00Z"},
            {"domain":"bad domain","title":"x","url":"https://news.test/x","published_at":"2026-12-01T06:00:00Z"},
            {"domain":"example.com","title":"x","url":"javascript:alert(1)","published_at":"2026-12-01T06:00:00Z"},
            {"domain":"example.com","title":"x","url":"https://x.test/","published_at":"yesterday"},
            {"domain":"example.com"}
        ]}"#
    }

    struct Fixed(Vec<NewsItem>);
    impl NewsProvider for Fixed {
        fn news_for(&self, domains: &[String]) -> Vec<NewsItem> {
            self.0
                .iter()
                .filter(|i| domains.contains(&i.domain))
                .cloned()
                .collect()
        }
    }

    #[test]
    fn parses_and_skips_bad_items() {
        let items = parse_feed(feed()).unwrap();
        assert_eq!(items.len(), 3, "{items:?}");
        assert_eq!(items[0].domain, "example.com");
        assert!(parse_feed(b"[1,2]").is_err());
        assert!(parse_feed(&vec![b' '; MAX_FEED_BYTES + 1]).is_err());
    }

    #[test]
    fn cards_only_for_contact_domains_and_recent() {
        let p = Fixed(parse_feed(feed()).unwrap());
        let contacts = BTreeMap::from([("example.com".to_string(), 2)]);
        let cards = news_cards(&p, &contacts, NOW);
        assert_eq!(cards.len(), 1, "{cards:?}");
        assert_eq!(cards[0].kind, CardKind::CompanyNews);
        assert!(cards[0].title.contains("Example raises a round"));
        assert!(cards[0]
            .detail
            .contains("2 of your contacts are at example.com"));
        // Stable ids.
        assert_eq!(cards[0].id, news_cards(&p, &contacts, NOW)[0].id);
        assert_eq!(
            domain_of("Ann <x>@Example.com").as_deref(),
            Some("example.com")
        );
        assert_eq!(domain_of("nobody"), None);
    }

    #[tokio::test]
    async fn refused_url_never_connects() {
        let f = JsonFeed::new(
            "http://10.0.0.1/feed.json".into(),
            OutboundPolicy::default(),
            Duration::from_secs(60),
        );
        // Refused before any connection: not `target_unreachable` / `target_timeout`.
        let e = f.refresh().await.unwrap_err();
        assert_eq!(e.code(), "target_not_allowed");
        assert!(f.news_for(&["example.com".into()]).is_empty());
    }
}
