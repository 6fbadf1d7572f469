//! Machine-activity classification: which opens and clicks were made by a person
//! and which by a machine (privacy proxies, security scanners, prefetchers).
//!
//! Classify, never drop: every event stays stored, and reports show human and
//! machine counts side by side. The signals are the ones design.md lists:
//! - user agent: none at all; exactly `Mozilla/5.0` (Apple Mail Privacy
//!   Protection); named security scanners (Safe Links, Mimecast, Proofpoint,
//!   Barracuda, ...) and self-declared bots and crawlers. Google's and Yahoo's
//!   image proxies load the pixel when a person opens the email, so their opens
//!   are human. Generic HTTP libraries and headless browsers are *not* machine by
//!   user agent alone: integrations, privacy tools and people's own scripts use
//!   them, and the timing signals below catch scanners that do.
//! - source network: the client address lies in a network the operator listed
//!   (`MAILBEACON_MACHINE_NETWORKS`: security gateways, corporate proxies),
//!   checked when the hit is recorded, on the full address (the stored one is
//!   truncated), so a list change applies to hits from then on.
//! - timing: a click within a few seconds of delivery (only known for copies
//!   mailbeacon delivered itself through SMTP: for copies handed back with
//!   `deliver: "return"` the caller sends them whenever it likes, so the time of
//!   preparation says nothing), or several different links of one copy clicked
//!   within about two seconds (scanners follow every link at once).
//!
//! Not used, by decision: a hidden "honeypot" link in every copy (design.md's
//! last signal). Hidden links are themselves a spam-filter signal and an
//! accessibility trap (screen readers and keyboard users can reach them), and
//! the link-burst rule already catches the scanners that follow every link.
//!
//! Pure functions, no I/O.

// `Heuristics` (the thresholds) is configuration; it is re-exported because
// every function here takes it.
pub use crate::config::Heuristics;
use crate::model::{Event, EventKind};

/// Why an event counts as machine activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Machine {
    NoUserAgent,
    ApplePrivacyProtection,
    Scanner,
    TooFast,
    LinkBurst,
    ListedNetwork,
}

impl Machine {
    pub fn as_str(self) -> &'static str {
        match self {
            Machine::NoUserAgent => "no_user_agent",
            Machine::ApplePrivacyProtection => "apple_privacy_protection",
            Machine::Scanner => "scanner",
            Machine::TooFast => "too_fast",
            Machine::LinkBurst => "link_burst",
            Machine::ListedNetwork => "listed_network",
        }
    }
}

/// Markers of security scanners, link checkers and bots (lowercase substrings).
const SCANNER_MARKERS: &[&str] = &[
    "barracuda",
    "mimecast",
    "proofpoint",
    "safelinks",
    "safe links",
    "symantec",
    "trendmicro",
    "forcepoint",
    "crawler",
    "spider",
    "bingpreview",
];

/// Self-declared bots, as whole words of the user agent (split on anything
/// not a letter or digit): matching the substring "bot" would also match phone
/// models such as "Cubot".
const BOT_WORDS: &[&str] = &[
    "bot",
    "bots",
    "robot",
    "googlebot",
    "bingbot",
    "yandexbot",
    "duckduckbot",
    "applebot",
    "slackbot",
    "twitterbot",
    "linkedinbot",
    "discordbot",
    "telegrambot",
    "facebot",
    "petalbot",
    "ahrefsbot",
    "semrushbot",
    "mj12bot",
    "dotbot",
    "amazonbot",
    "gptbot",
    "claudebot",
    "bytespider",
];

/// Returns true if and only if `lower` (a lowercased user agent) declares a
/// bot: one of `BOT_WORDS` as a word, or a word ending in "bot" next to the
/// crawler convention of a `+http` contact URL.
fn declares_bot(lower: &str) -> bool {
    let mut words = lower.split(|c: char| !c.is_ascii_alphanumeric());
    if words.any(|w| BOT_WORDS.contains(&w)) {
        return true;
    }
    lower.contains("+http")
        && lower
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|w| w.len() > 3 && w.ends_with("bot"))
}

/// Distinct links of one copy clicked within this window are a scanner's.
const BURST_MS: u64 = 2_000;

/// Classifies one event by its own signals (user agent, timing).
pub fn classify(e: &Event, h: &Heuristics) -> Option<Machine> {
    if e.machine_net.is_some() {
        return Some(Machine::ListedNetwork);
    }
    let ua = e.ua.trim();
    if ua.is_empty() {
        return Some(Machine::NoUserAgent);
    }
    if ua == "Mozilla/5.0" {
        return Some(Machine::ApplePrivacyProtection);
    }
    let lower = ua.to_ascii_lowercase();
    if lower.contains("googleimageproxy") || lower.contains("yahoomailproxy") {
        return None;
    }
    if SCANNER_MARKERS.iter().any(|m| lower.contains(m)) || declares_bot(&lower) {
        return Some(Machine::Scanner);
    }
    // Gateways fetch attachments on delivery as they follow links.
    let fetch = matches!(e.kind, EventKind::Click | EventKind::Attachment);
    if fetch && e.since_prepared_s < h.too_fast_s {
        return Some(Machine::TooFast);
    }
    None
}

/// Classifies every event of one email; `events` in any order. Adds the
/// cross-event signal (link bursts) to the per-event ones.
pub fn classify_all(events: &[Event], h: &Heuristics) -> Vec<Option<Machine>> {
    let mut out: Vec<Option<Machine>> = events.iter().map(|e| classify(e, h)).collect();
    let clicks: Vec<usize> = (0..events.len())
        .filter(|&i| events[i].kind == EventKind::Click)
        .collect();
    let keys: Vec<Click> = clicks
        .iter()
        .map(|&i| Click {
            recipient: events[i].recipient,
            at_ms: events[i].at_ms,
            link: events[i].link,
        })
        .collect();
    for (&i, burst) in clicks.iter().zip(link_bursts(&keys)) {
        if burst && out[i].is_none() {
            out[i] = Some(Machine::LinkBurst);
        }
    }
    out
}

/// What the link-burst signal looks at of a click.
#[derive(Clone, Copy, Debug)]
pub struct Click {
    pub recipient: u32,
    pub at_ms: u64,
    pub link: Option<u32>,
}

/// For each of one email's clicks (in any order), whether it is in a link
/// burst: clicks per recipient in time order, where a window holding ≥ 2
/// distinct links within `BURST_MS` marks all its clicks.
pub fn link_bursts(clicks: &[Click]) -> Vec<bool> {
    let mut out = vec![false; clicks.len()];
    let mut order: Vec<usize> = (0..clicks.len()).collect();
    order.sort_by_key(|&i| (clicks[i].recipient, clicks[i].at_ms));
    let mut start = 0;
    for end in 0..order.len() {
        let (re, te) = (clicks[order[end]].recipient, clicks[order[end]].at_ms);
        while clicks[order[start]].recipient != re || te - clicks[order[start]].at_ms > BURST_MS {
            start += 1;
        }
        let window = &order[start..=end];
        let first_link = clicks[window[0]].link;
        if window.iter().any(|&i| clicks[i].link != first_link) {
            for &i in window {
                out[i] = true;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(e: &Event) -> Option<Machine> {
        super::classify(e, &Heuristics::default())
    }

    fn ev(kind: EventKind, ua: &str, at_ms: u64, link: Option<u32>, since: i64) -> Event {
        Event {
            seq: 0,
            at_ms,
            kind,
            email: 1,
            recipient: 0,
            link,
            method: "GET".into(),
            ua: ua.into(),
            ip: String::new(),
            since_prepared_s: since,
            machine_net: None,
        }
    }

    const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";

    #[test]
    fn bots_are_words_not_substrings() {
        let cubot = "Mozilla/5.0 (Linux; Android 10; CUBOT X30) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Mobile Safari/537.36";
        assert_eq!(classify(&ev(EventKind::Open, cubot, 0, None, 99)), None);
        for ua in [
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
            "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
            "Mozilla/5.0 (compatible; ExampleCrawlBot/1.0; +https://example.test/bot)",
            "some-bot/1.0",
        ] {
            assert_eq!(
                classify(&ev(EventKind::Open, ua, 0, None, 99)),
                Some(Machine::Scanner),
                "{ua}"
            );
        }
    }

    #[test]
    fn a_listed_network_is_machine_whatever_the_user_agent() {
        let mut e = ev(EventKind::Open, FIREFOX, 0, None, 100);
        assert_eq!(classify(&e), None);
        e.machine_net = Some("gateway".into());
        assert_eq!(classify(&e), Some(Machine::ListedNetwork));
    }

    #[test]
    fn user_agent_signals() {
        assert_eq!(
            classify(&ev(EventKind::Open, "", 0, None, 100)),
            Some(Machine::NoUserAgent)
        );
        assert_eq!(
            classify(&ev(EventKind::Open, "Mozilla/5.0", 0, None, 100)),
            Some(Machine::ApplePrivacyProtection)
        );
        assert_eq!(
            classify(&ev(
                EventKind::Open,
                "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
                0,
                None,
                100
            )),
            None
        );
        assert_eq!(
            classify(&ev(EventKind::Open, "Barracuda Sentinel", 0, None, 100)),
            Some(Machine::Scanner)
        );
        assert_eq!(classify(&ev(EventKind::Open, FIREFOX, 0, None, 100)), None);
    }

    #[test]
    fn http_libraries_and_headless_browsers_are_not_machines_by_user_agent() {
        for ua in [
            "curl/8.5.0",
            "python-requests/2.32",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/126.0 Safari/537.36",
        ] {
            assert_eq!(classify(&ev(EventKind::Open, ua, 0, None, 100)), None, "{ua}");
        }
    }

    #[test]
    fn too_fast_needs_a_known_delivery_time() {
        let click = ev(EventKind::Click, FIREFOX, 0, Some(0), 1);
        let h = Heuristics::default();
        assert_eq!(
            super::classify(&click, &h.for_delivery("smtp")),
            Some(Machine::TooFast)
        );
        assert_eq!(super::classify(&click, &h.for_delivery("return")), None);
    }

    #[test]
    fn attachment_views_follow_the_click_rules() {
        let h = Heuristics::default().for_delivery("smtp");
        let fast = ev(EventKind::Attachment, FIREFOX, 0, Some(0), 1);
        assert_eq!(super::classify(&fast, &h), Some(Machine::TooFast));
        let later = ev(EventKind::Attachment, FIREFOX, 0, Some(0), 100);
        assert_eq!(super::classify(&later, &h), None);
        let scanner = ev(EventKind::Attachment, "Barracuda Sentinel", 0, Some(0), 100);
        assert_eq!(super::classify(&scanner, &h), Some(Machine::Scanner));
    }

    #[test]
    fn timing_signals() {
        assert_eq!(
            classify(&ev(EventKind::Click, FIREFOX, 0, Some(0), 1)),
            Some(Machine::TooFast)
        );
        let burst = [
            ev(EventKind::Click, FIREFOX, 10_000, Some(0), 100),
            ev(EventKind::Click, FIREFOX, 10_500, Some(1), 100),
            ev(EventKind::Click, FIREFOX, 60_000, Some(2), 150),
            ev(EventKind::Click, FIREFOX, 61_000, Some(2), 151),
        ];
        let c = classify_all(&burst, &Heuristics::default());
        assert_eq!(
            c,
            vec![
                Some(Machine::LinkBurst),
                Some(Machine::LinkBurst),
                None,
                None
            ]
        );
    }
}
