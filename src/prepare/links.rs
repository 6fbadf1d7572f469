//! Which hrefs are trackable, and why the others are left alone.
//!
//! This module knows nothing about HTML parsing or MIME: it takes one
//! attribute value exactly as it appears in the markup, decodes its character
//! references and decides whether the link is an absolute `http(s)` URL that
//! we may rewrite. Everything that is not one is left alone and the reason is
//! recorded (see [`SkipReason`]), so the caller and the golden tests can show
//! what happened to every link.

/// Why an href was left alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// `href=""` or only whitespace.
    Empty,
    /// `#fragment`: an in-document anchor.
    Fragment,
    /// `mailto:`.
    Mailto,
    /// `tel:`.
    Tel,
    /// `sms:`.
    Sms,
    /// `javascript:`.
    Javascript,
    /// `data:`.
    Data,
    /// Any other scheme (`ftp:`, `cid:`, `callto:`, …) or an `http(s):` URL
    /// without `//host`.
    OtherScheme,
    /// No scheme: a relative or protocol-relative (`//host/…`) reference, or
    /// something that is not a URL at all (`facebook.com`, `<unsubscribe>`).
    Relative,
    /// A template placeholder: `{{…}}`, `<%…%>`, `[…]`, Mailchimp `*|…|*`,
    /// or a URL-encoded `%7B%7B…`.
    Placeholder,
    /// Already one of our own click links (starts with the click prefix).
    OwnClickUrl,
    /// The element carries `data-mailbeacon-notrack` or `clicktracking="off"`.
    OptOut,
}

impl SkipReason {
    /// A short stable name, used in reports and golden files.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Empty => "empty",
            SkipReason::Fragment => "fragment",
            SkipReason::Mailto => "mailto",
            SkipReason::Tel => "tel",
            SkipReason::Sms => "sms",
            SkipReason::Javascript => "javascript",
            SkipReason::Data => "data",
            SkipReason::OtherScheme => "other_scheme",
            SkipReason::Relative => "relative",
            SkipReason::Placeholder => "placeholder",
            SkipReason::OwnClickUrl => "own_click_url",
            SkipReason::OptOut => "opt_out",
        }
    }
}

/// HTML whitespace as the URL parser strips it around an href.
fn is_html_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0C')
}

/// Trims the whitespace a browser ignores around an href.
pub(crate) fn trim_href(s: &str) -> &str {
    s.trim_matches(is_html_space)
}

/// Returns `Ok(())` if and only if `href` (already entity-decoded and
/// trimmed) is a link we rewrite; otherwise the reason it is left alone.
pub(crate) fn classify(href: &str, own_click_prefix: &str) -> Result<(), SkipReason> {
    if href.is_empty() {
        return Err(SkipReason::Empty);
    }
    if is_placeholder(href) {
        return Err(SkipReason::Placeholder);
    }
    if !own_click_prefix.is_empty() && starts_with_ignore_case(href, own_click_prefix) {
        return Err(SkipReason::OwnClickUrl);
    }
    if href.starts_with('#') {
        return Err(SkipReason::Fragment);
    }
    let Some(scheme) = scheme_of(href) else {
        return Err(SkipReason::Relative);
    };
    let rest = &href[scheme.len() + 1..];
    if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") {
        // An absolute URL needs `//` and a host; `http:foo` is relative in
        // browsers' eyes and `http://` alone goes nowhere.
        let host_ok = rest
            .strip_prefix("//")
            .and_then(|r| r.chars().next())
            .is_some_and(|c| !matches!(c, '/' | '?' | '#') && !is_html_space(c));
        return if host_ok {
            Ok(())
        } else {
            Err(SkipReason::OtherScheme)
        };
    }
    let reason = match scheme.to_ascii_lowercase().as_str() {
        "mailto" => SkipReason::Mailto,
        "tel" => SkipReason::Tel,
        "sms" => SkipReason::Sms,
        "javascript" => SkipReason::Javascript,
        "data" => SkipReason::Data,
        _ => SkipReason::OtherScheme,
    };
    Err(reason)
}

/// The URL scheme (`[A-Za-z][A-Za-z0-9+.-]*` before the first `:`), if any.
fn scheme_of(href: &str) -> Option<&str> {
    let colon = href.find(':')?;
    let scheme = &href[..colon];
    let mut chars = scheme.chars();
    let first = chars.next()?;
    if !first.is_ascii_alphabetic() {
        return None;
    }
    if chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-')) {
        Some(scheme)
    } else {
        None
    }
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// Returns true if and only if the href looks like an unexpanded template
/// placeholder, or contains one. Rewriting such a link would either break the
/// template engine that still has to expand it or track a URL that goes
/// nowhere.
fn is_placeholder(href: &str) -> bool {
    let lower_has = |needle: &str| {
        href.as_bytes()
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
    };
    href.contains("{{")
        || href.contains("}}")
        || href.contains("<%")
        || href.contains("%>")
        || href.contains("*|")
        || href.contains("|*")
        || lower_has("%7b%7b")
        || (href.starts_with('[') && href.ends_with(']'))
}

/// Decodes the character references an href may carry (`&amp;`, `&#38;`,
/// `&#x26;`, and the few named ones that occur in URLs). References must end
/// with `;`; anything not recognised is kept as written, which is what a
/// browser does for an unknown name.
pub(crate) fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        // A reference is short; look for its `;` within a small window.
        let semi = rest
            .char_indices()
            .take(12)
            .find(|&(_, c)| c == ';')
            .map(|(i, _)| i);
        let decoded = semi.and_then(|semi| decode_one(&rest[1..semi]).map(|c| (c, semi)));
        match decoded {
            Some((c, semi)) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Decodes the body of one reference (between `&` and `;`).
fn decode_one(name: &str) -> Option<char> {
    if let Some(num) = name.strip_prefix('#') {
        let code = if let Some(hex) = num.strip_prefix(['x', 'X']) {
            u32::from_str_radix(hex, 16).ok()?
        } else {
            num.parse::<u32>().ok()?
        };
        // NUL and surrogates decode to U+FFFD in browsers.
        return Some(
            char::from_u32(code)
                .filter(|&c| c != '\0')
                .unwrap_or('\u{FFFD}'),
        );
    }
    Some(match name {
        "amp" | "AMP" => '&',
        "lt" | "LT" => '<',
        "gt" | "GT" => '>',
        "quot" | "QUOT" => '"',
        "apos" => '\'',
        "nbsp" => '\u{A0}',
        "sol" => '/',
        "colon" => ':',
        "quest" => '?',
        "equals" => '=',
        "num" => '#',
        "percnt" => '%',
        "plus" => '+',
        "period" => '.',
        "commat" => '@',
        "lowbar" => '_',
        "tilde" => '~',
        _ => return None,
    })
}

/// Escapes a value for a double-quoted HTML attribute.
pub(crate) fn escape_attr(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(['&', '"', '<', '>']) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: &str = "https://track.example.com/c/";

    #[test]
    fn trackable_http_and_https_any_case() {
        for h in [
            "http://example.com",
            "https://example.com/a?b=1&c=2#x",
            "HTTPS://EXAMPLE.COM/",
            "hTtP://example.com:8080/",
        ] {
            assert_eq!(classify(h, OWN), Ok(()), "{h}");
        }
    }

    #[test]
    fn left_alone_with_reason() {
        let cases = [
            ("", SkipReason::Empty),
            ("#top", SkipReason::Fragment),
            ("#", SkipReason::Fragment),
            ("mailto:a@example.com", SkipReason::Mailto),
            ("MAILTO:a@example.com", SkipReason::Mailto),
            ("tel:+123", SkipReason::Tel),
            ("sms:+123", SkipReason::Sms),
            ("javascript:void(0)", SkipReason::Javascript),
            ("data:text/html,hi", SkipReason::Data),
            ("cid:image001", SkipReason::OtherScheme),
            ("ftp://example.com/", SkipReason::OtherScheme),
            ("http:/example.com", SkipReason::OtherScheme),
            ("https://", SkipReason::OtherScheme),
            ("/relative/path", SkipReason::Relative),
            ("relative.html", SkipReason::Relative),
            ("facebook.com", SkipReason::Relative),
            ("//cdn.example.com/x", SkipReason::Relative),
            ("{{action_url}}", SkipReason::Placeholder),
            ("https://example.com/?u={{user}}", SkipReason::Placeholder),
            (
                "<%asm_global_unsubscribe_raw_url%>",
                SkipReason::Placeholder,
            ),
            ("[UNSUBSCRIBE]", SkipReason::Placeholder),
            ("[Unsubscribe_Preferences]", SkipReason::Placeholder),
            ("*|UNSUB|*", SkipReason::Placeholder),
            (
                "https://example.com/%7B%7Bid%7D%7D",
                SkipReason::Placeholder,
            ),
            (
                "https://track.example.com/c/abc/def",
                SkipReason::OwnClickUrl,
            ),
            ("HTTPS://TRACK.EXAMPLE.COM/c/abc", SkipReason::OwnClickUrl),
        ];
        for (h, want) in cases {
            assert_eq!(classify(h, OWN), Err(want), "{h:?}");
        }
    }

    #[test]
    fn empty_own_prefix_matches_nothing() {
        assert_eq!(classify("https://example.com/", ""), Ok(()));
    }

    #[test]
    fn entities_decoded() {
        assert_eq!(decode_entities("a?b=1&amp;c=2"), "a?b=1&c=2");
        assert_eq!(decode_entities("&#38;&#x26;&#X26;"), "&&&");
        assert_eq!(decode_entities("a&copy=2&b"), "a&copy=2&b");
        assert_eq!(decode_entities("&unknown;"), "&unknown;");
        assert_eq!(decode_entities("&#0;&#xD800;"), "\u{FFFD}\u{FFFD}");
        assert_eq!(decode_entities("&#99999999999;"), "&#99999999999;");
        assert_eq!(decode_entities("x&"), "x&");
        assert_eq!(decode_entities("é&amp;é"), "é&é");
    }

    #[test]
    fn trims_html_whitespace() {
        assert_eq!(trim_href("\n  https://x.example/ \t"), "https://x.example/");
    }

    #[test]
    fn escape_for_attribute() {
        assert_eq!(escape_attr("a&b\"c"), "a&amp;b&quot;c");
        assert_eq!(escape_attr("plain"), "plain");
    }
}
