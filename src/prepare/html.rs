//! Link rewriting inside one decoded HTML body, with lol_html.
//!
//! The document is streamed through lol_html once, at parse time. Every
//! trackable `href` (on `a`, `area`, and VML elements such as
//! `<v:roundrect>`, including those inside Outlook conditional comments
//! `<!--[if mso]>…<![endif]-->`, which get their own inner rewriter pass) is
//! replaced with a unique marker, and a marker is put before the `</body>`
//! end tag for the pixel. The output is then cut at the markers into
//! [`Piece`]s: literal text and numbered holes. `render` fills the holes per
//! recipient without running lol_html again.
//!
//! Nothing else is touched: `<style>`, CSS `url(…)`, `img src`, plain
//! comments, text. The one exception is `<meta charset>` /
//! `<meta http-equiv=content-type>`, switched to `utf-8` when the part is
//! transcoded (the caller asks for it), so the markup does not contradict the
//! new MIME charset.

use std::cell::RefCell;
use std::rc::Rc;

use lol_html::html_content::{Comment, ContentType, Element};
use lol_html::{doc_comments, element, end_tag, rewrite_str, RewriteStrSettings};

use super::links::{classify, decode_entities, trim_href, SkipReason};
use super::Untouched;

/// One piece of a rewritten HTML body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    /// Literal HTML, copied as is.
    Text(String),
    /// Hole for the click URL of link number `n` (global index).
    Link(usize),
    /// Hole for the pixel URL (the surrounding `<img src="…">` is literal).
    PixelUrl,
}

/// Links collected across all rewritten parts of one message.
#[derive(Debug, Default)]
pub(crate) struct LinkSink {
    /// Trackable links, entity-decoded and trimmed; index = link index.
    pub links: Vec<String>,
    /// The original attribute value of each link, escaped for a
    /// double-quoted attribute: what `render` writes when no click URL is
    /// given for that link.
    pub original: Vec<String>,
    /// Hrefs left alone, with the reason.
    pub untouched: Vec<Untouched>,
}

/// Options for [`rewrite`].
pub(crate) struct Options<'a> {
    pub own_click_prefix: &'a str,
    /// Put the pixel hole in this part.
    pub pixel: bool,
    /// Switch `<meta>` charset declarations to utf-8.
    pub fix_meta_charset: bool,
}

/// The pixel image. Invisible, and `display:block` so it adds no line box.
pub(crate) const PIXEL_BEFORE: &str = "<img src=\"";
const PIXEL_AFTER: &str = "\" width=\"1\" height=\"1\" alt=\"\" \
style=\"display:block;border:0;width:1px;height:1px\">";

/// Where the pixel goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Nowhere,
    /// Before the last `</body>`, else at the end of the document.
    BodyEnd,
    /// Fallback: right after the first `<body>` start tag, else at the
    /// start of the document.
    BodyStart,
}

/// Rewrites one decoded HTML document. Link indices continue from
/// `sink.links.len()`. Returns the pieces, or lol_html's error message.
///
/// The pixel goes before the last `</body>` or, without one, at the end.
/// If the end of the document sits inside an unterminated tag or comment
/// (seen in real mail: `<a href="http://…` cut off), a pixel put there would
/// be swallowed, so the result is checked by parsing it once more; if the
/// pixel is not an `img` element there, it goes at the start of the body.
pub(crate) fn rewrite(
    html: &str,
    opts: &Options<'_>,
    sink: &mut LinkSink,
) -> Result<Vec<Piece>, String> {
    let base = sink.links.len();
    let (mut pieces, mut local) = if opts.pixel {
        let (pieces, local) = rewrite_once(html, opts, base, Place::BodyEnd)?;
        if pixel_renders(&pieces) {
            (pieces, local)
        } else {
            let (p2, l2) = rewrite_once(html, opts, base, Place::BodyStart)?;
            if pixel_renders(&p2) {
                (p2, l2)
            } else {
                (pieces, local)
            }
        }
    } else {
        rewrite_once(html, opts, base, Place::Nowhere)?
    };
    pieces.retain(|p| !matches!(p, Piece::Text(t) if t.is_empty()));
    sink.links.append(&mut local.links);
    sink.original.append(&mut local.original);
    sink.untouched.append(&mut local.untouched);
    Ok(pieces)
}

/// Returns true if and only if the pieces, filled in, hold exactly one
/// `img` element whose `src` is the pixel.
fn pixel_renders(pieces: &[Piece]) -> bool {
    const PROBE: &str = "mailbeacon:pixel-probe";
    let mut doc = String::new();
    for p in pieces {
        match p {
            Piece::Text(t) => doc.push_str(t),
            Piece::Link(_) => doc.push('#'),
            Piece::PixelUrl => doc.push_str(PROBE),
        }
    }
    let found = std::cell::Cell::new(0usize);
    let ok = rewrite_str(
        &doc,
        RewriteStrSettings {
            element_content_handlers: vec![element!("img", |el: &mut Element| {
                if el.get_attribute("src").as_deref() == Some(PROBE) {
                    found.set(found.get() + 1);
                }
                Ok(())
            })],
            strict: false,
            ..RewriteStrSettings::new()
        },
    )
    .is_ok();
    ok && found.get() == 1
}

fn rewrite_once(
    html: &str,
    opts: &Options<'_>,
    base: usize,
    place: Place,
) -> Result<(Vec<Piece>, LinkSink), String> {
    let marker = unique_marker(html);
    // The handlers are 'static closures (lol_html's end-tag handlers must
    // be), so the state is shared through Rc<RefCell>. Links are pushed into
    // a local sink and moved into the caller's at the end.
    let local = LinkSink::default();
    let state = Rc::new(RefCell::new(StateOwned {
        sink: local,
        base,
        marker: marker.clone(),
        own_click_prefix: opts.own_click_prefix.to_string(),
        body_ends: 0,
        body_starts: 0,
    }));

    let out = {
        let s_links = Rc::clone(&state);
        let s_comments = Rc::clone(&state);
        let s_body = Rc::clone(&state);
        let fix_meta = opts.fix_meta_charset;
        // `element!` parses its selector with `unwrap()`; every selector in
        // this file is a constant that parses ("[href]", "body", "meta",
        // "img"), which the unit tests exercise, so it cannot fire on input.
        let mut handlers = vec![
            element!("[href]", move |el: &mut Element| {
                on_href(&mut s_links.borrow_mut(), el);
                Ok(())
            }),
            element!("body", move |el: &mut Element| {
                if place == Place::BodyStart {
                    let mut st = s_body.borrow_mut();
                    if st.body_starts == 0 {
                        el.prepend(&format!("{}S0_", st.marker), ContentType::Html);
                    }
                    st.body_starts += 1;
                    return Ok(());
                }
                if place != Place::BodyEnd {
                    return Ok(());
                }
                let st = Rc::clone(&s_body);
                // `on_end_tag` only fails for elements that cannot have an
                // end tag; a body without one simply gets no marker here and
                // the pixel goes at the end of the document instead.
                let _ = el.on_end_tag(end_tag!(move |end| {
                    let mut st = st.borrow_mut();
                    let m = format!("{}B{}_", st.marker, st.body_ends);
                    st.body_ends += 1;
                    end.before(&m, ContentType::Html);
                    Ok(())
                }));
                Ok(())
            }),
        ];
        if fix_meta {
            handlers.push(element!("meta", |el: &mut Element| {
                fix_meta_charset(el);
                Ok(())
            }));
        }
        rewrite_str(
            html,
            RewriteStrSettings {
                element_content_handlers: handlers,
                document_content_handlers: vec![doc_comments!(move |c: &mut Comment| {
                    on_comment(&s_comments, c);
                    Ok(())
                })],
                // Non-strict: never refuse a document because of ambiguous
                // markup; we only touch attributes.
                strict: false,
                ..RewriteStrSettings::new()
            },
        )
        .map_err(|e| e.to_string())?
    };

    let st = match Rc::try_unwrap(state) {
        Ok(cell) => cell.into_inner(),
        // All handler closures were dropped with the settings above; if a
        // clone survived anyway, copy the state out instead of panicking.
        Err(rc) => rc.borrow().clone_state(),
    };
    let pieces = split(&out, &marker, st.body_ends, place);
    Ok((pieces, st.sink))
}

/// State shared by the handlers of one document.
struct StateOwned {
    sink: LinkSink,
    base: usize,
    marker: String,
    own_click_prefix: String,
    body_ends: usize,
    body_starts: usize,
}

impl StateOwned {
    fn clone_state(&self) -> StateOwned {
        StateOwned {
            sink: LinkSink {
                links: self.sink.links.clone(),
                original: self.sink.original.clone(),
                untouched: self.sink.untouched.clone(),
            },
            base: self.base,
            marker: self.marker.clone(),
            own_click_prefix: self.own_click_prefix.clone(),
            body_ends: self.body_ends,
            body_starts: self.body_starts,
        }
    }
}

/// Handles one element with an `href`: rewrites it to a marker when it is
/// trackable, records it as untouched otherwise.
fn on_href(st: &mut StateOwned, el: &mut Element) {
    let tag = el.tag_name();
    // `a` and `area` are the HTML links; `v:*` are Outlook's VML shapes
    // (`<v:roundrect href=…>` buttons). `link`, `base` and others are not
    // clickable content.
    if !(tag == "a" || tag == "area" || tag.starts_with("v:")) {
        return;
    }
    let Some(raw) = el.get_attribute("href") else {
        return;
    };
    let decoded = decode_entities(&raw);
    let href = trim_href(&decoded);
    let opted_out = el.has_attribute("data-mailbeacon-notrack")
        || el
            .get_attribute("clicktracking")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("off"));
    let verdict = if opted_out {
        Err(SkipReason::OptOut)
    } else {
        classify(href, &st.own_click_prefix)
    };
    match verdict {
        Ok(()) => {
            let n = st.base + st.sink.links.len();
            st.sink.links.push(href.to_string());
            // `raw` is the value as written (entities kept); it is re-quoted
            // with double quotes, so only `"` needs escaping.
            st.sink.original.push(raw.replace('"', "&quot;"));
            let m = format!("{}L{}_", st.marker, n);
            // Cannot fail: "href" is a valid attribute name.
            let _ = el.set_attribute("href", &m);
        }
        Err(reason) => st.sink.untouched.push(Untouched {
            href: href.to_string(),
            reason,
        }),
    }
}

/// Handles a comment: an Outlook conditional comment
/// (`<!--[if …]>…<![endif]-->`) has its content rewritten by an inner
/// rewriter; any other comment is left alone.
fn on_comment(state: &Rc<RefCell<StateOwned>>, c: &mut Comment) {
    let text = c.text();
    let Some((open, inner, close)) = split_conditional(&text) else {
        return;
    };
    let before = state.borrow().sink.links.len();
    let s = Rc::clone(state);
    let rewritten = rewrite_str(
        inner,
        RewriteStrSettings {
            element_content_handlers: vec![element!("[href]", move |el: &mut Element| {
                on_href(&mut s.borrow_mut(), el);
                Ok(())
            })],
            strict: false,
            ..RewriteStrSettings::new()
        },
    );
    let Ok(rewritten) = rewritten else {
        // Leave the comment as it was; forget links recorded for it.
        state.borrow_mut().sink.links.truncate(before);
        state.borrow_mut().sink.original.truncate(before);
        return;
    };
    if state.borrow().sink.links.len() != before {
        let new = format!("<!--{open}{rewritten}{close}-->");
        c.replace(&new, ContentType::Html);
    }
}

/// Splits a conditional comment's text into (`[if …]>`, inner, `<![endif]`).
fn split_conditional(text: &str) -> Option<(&str, &str, &str)> {
    let lead = text.len() - text.trim_start().len();
    let t = &text[lead..];
    if !t.starts_with("[if") {
        return None;
    }
    let open_end = lead + t.find("]>")? + 2;
    let trail = text.trim_end();
    let endif = trail.rfind("<![endif]")?;
    if endif < open_end {
        return None;
    }
    Some((&text[..open_end], &text[open_end..endif], &text[endif..]))
}

/// Switches a `<meta>` charset declaration to utf-8.
fn fix_meta_charset(el: &mut Element) {
    if el.has_attribute("charset") {
        let _ = el.set_attribute("charset", "utf-8");
        return;
    }
    let is_ct = el
        .get_attribute("http-equiv")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("content-type"));
    if !is_ct {
        return;
    }
    if let Some(content) = el.get_attribute("content") {
        let lower = content.to_ascii_lowercase();
        if let Some(pos) = lower.find("charset=") {
            let start = pos + "charset=".len();
            let end = content[start..]
                .find([';', ' ', '\t'])
                .map_or(content.len(), |e| start + e);
            let new = format!("{}utf-8{}", &content[..start], &content[end..]);
            let _ = el.set_attribute("content", &new);
        }
    }
}

/// A marker prefix that does not occur in `html`. It contains no character
/// that lol_html escapes, and none of its proper suffixes is a prefix of it,
/// so occurrences in the output can only be ours.
fn unique_marker(html: &str) -> String {
    let mut n: u64 = 0;
    loop {
        let m = format!("MBSPLICE{n}x");
        if !html.contains(&m) {
            return m;
        }
        n += 1;
    }
}

/// Cuts the rewritten document at the markers. The last body-end marker
/// becomes the pixel (others vanish); with none, the pixel goes at the end.
/// With [`Place::BodyStart`], the body-start marker becomes the pixel; with
/// none, the pixel goes at the start.
fn split(out: &str, marker: &str, body_ends: usize, place: Place) -> Vec<Piece> {
    let pixel = place != Place::Nowhere;
    let mut pieces = Vec::new();
    let mut text = String::with_capacity(out.len());
    let mut rest = out;
    let mut pixel_done = false;
    let last_body = body_ends.checked_sub(1);
    while let Some(pos) = rest.find(marker) {
        text.push_str(&rest[..pos]);
        let after = &rest[pos + marker.len()..];
        let kind = after.as_bytes().first().copied();
        let digits = after
            .get(1..)
            .map_or(0, |s| s.bytes().take_while(u8::is_ascii_digit).count());
        let num: Option<usize> = after.get(1..1 + digits).and_then(|d| d.parse().ok());
        let well_formed = after.as_bytes().get(1 + digits) == Some(&b'_');
        match (kind, num, well_formed) {
            (Some(b'L'), Some(n), true) => {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
                pieces.push(Piece::Link(n));
            }
            (Some(b'S'), Some(_), true) => {
                if place == Place::BodyStart && !pixel_done {
                    push_pixel(&mut pieces, &mut text);
                    pixel_done = true;
                }
            }
            (Some(b'B'), Some(n), true) => {
                if place == Place::BodyEnd && Some(n) == last_body && !pixel_done {
                    push_pixel(&mut pieces, &mut text);
                    pixel_done = true;
                }
            }
            _ => {
                // Not one of ours (cannot happen: the prefix is unique).
                // Keep the text.
                text.push_str(marker);
                rest = after;
                continue;
            }
        }
        rest = &after[2 + digits..];
    }
    text.push_str(rest);
    if pixel && !pixel_done {
        if place == Place::BodyStart {
            let mut all = vec![
                Piece::Text(PIXEL_BEFORE.to_string()),
                Piece::PixelUrl,
                Piece::Text(PIXEL_AFTER.to_string()),
            ];
            all.append(&mut pieces);
            pieces = all;
        } else {
            push_pixel(&mut pieces, &mut text);
        }
    }
    pieces.push(Piece::Text(text));
    pieces
}

fn push_pixel(pieces: &mut Vec<Piece>, text: &mut String) {
    text.push_str(PIXEL_BEFORE);
    pieces.push(Piece::Text(std::mem::take(text)));
    pieces.push(Piece::PixelUrl);
    text.push_str(PIXEL_AFTER);
}

/// Fills the holes with plain values (for tests and for debugging).
#[cfg(test)]
pub(crate) fn fill(pieces: &[Piece], links: &[String], pixel: &str) -> String {
    let mut s = String::new();
    for p in pieces {
        match p {
            Piece::Text(t) => s.push_str(t),
            Piece::Link(n) => s.push_str(&super::links::escape_attr(&links[*n])),
            Piece::PixelUrl => s.push_str(&super::links::escape_attr(pixel)),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(html: &str, pixel: bool) -> (String, LinkSink) {
        let mut sink = LinkSink::default();
        let pieces = rewrite(
            html,
            &Options {
                own_click_prefix: "https://t.example/c/",
                pixel,
                fix_meta_charset: false,
            },
            &mut sink,
        )
        .unwrap();
        let urls: Vec<String> = (0..sink.links.len()).map(|i| format!("CLICK{i}")).collect();
        (fill(&pieces, &urls, "PIXEL"), sink)
    }

    #[test]
    fn rewrites_a_area_and_decodes_entities() {
        let (out, sink) = run(
            r#"<a href="https://e.example/?a=1&amp;b=2">x</a><map><area href=' http://e.example/m '></map>"#,
            false,
        );
        assert_eq!(
            sink.links,
            ["https://e.example/?a=1&b=2", "http://e.example/m"]
        );
        assert_eq!(
            out,
            r#"<a href="CLICK0">x</a><map><area href="CLICK1"></map>"#
        );
        assert_eq!(sink.original[0], "https://e.example/?a=1&amp;b=2");
    }

    #[test]
    fn leaves_non_links_alone() {
        let html = r##"<html><head><style>a{background:url(https://e.example/bg.png)}</style>
<link href="https://e.example/x.css" rel="stylesheet"><base href="https://e.example/"></head>
<body><img src="https://e.example/i.png"><img src="cid:logo">
<a href="mailto:a@e.example">m</a><a href="tel:1">t</a><a href="sms:1">s</a>
<a href="#top">f</a><a href="javascript:x()">j</a><a href="data:,x">d</a><a href="rel/x">r</a>
<a href="{{url}}">p</a><a href="<%u%>">p</a><a href="[UNSUB]">p</a><a href="*|U|*">p</a>
<a href="https://t.example/c/abc">own</a>
<a data-mailbeacon-notrack href="https://e.example/1">o</a>
<a clicktracking="OFF" href="https://e.example/2">o</a>
<!-- <a href="https://e.example/commented">c</a> -->
<p>https://e.example/text</p></body></html>"##;
        let (out, sink) = run(html, false);
        assert!(sink.links.is_empty(), "{:?}", sink.links);
        assert_eq!(out, html);
        let reasons: Vec<_> = sink.untouched.iter().map(|u| u.reason.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "mailto",
                "tel",
                "sms",
                "fragment",
                "javascript",
                "data",
                "relative",
                "placeholder",
                "placeholder",
                "placeholder",
                "placeholder",
                "own_click_url",
                "opt_out",
                "opt_out"
            ]
        );
    }

    #[test]
    fn vml_inside_conditional_comment() {
        let html = "<p><!--[if mso]>\n<v:roundrect href=\"http://www.google.com\" style=\"x\"><w:anchorlock/></v:roundrect>\n<![endif]--><a href=\"http://www.google.com\">b</a></p><!-- <a href=\"http://plain.example/\"> -->";
        let (out, sink) = run(html, false);
        assert_eq!(
            sink.links,
            ["http://www.google.com", "http://www.google.com"]
        );
        assert_eq!(
            out,
            "<p><!--[if mso]>\n<v:roundrect href=\"CLICK0\" style=\"x\"><w:anchorlock/></v:roundrect>\n<![endif]--><a href=\"CLICK1\">b</a></p><!-- <a href=\"http://plain.example/\"> -->"
        );
    }

    #[test]
    fn conditional_comment_without_links_untouched() {
        let html = "<!--[if (gte mso 9)|(IE)]><table><tr><td><![endif]--><a href=\"{{x}}\">y</a>";
        let (out, _) = run(html, true);
        assert!(out.starts_with("<!--[if (gte mso 9)|(IE)]><table><tr><td><![endif]-->"));
    }

    #[test]
    fn pixel_before_last_body_end_or_at_end() {
        let (out, _) = run("<html><body>a</body></html>", true);
        assert_eq!(out.matches("PIXEL").count(), 1);
        assert!(out.contains("a<img src=\"PIXEL\" width=\"1\""));
        assert!(out.ends_with("></body></html>"));

        let (out, _) = run("<p>no body</p>", true);
        assert!(out.starts_with("<p>no body</p><img src=\"PIXEL\""));

        let (out, _) = run("<body>a</body><body>b</body>", true);
        assert_eq!(out.matches("PIXEL").count(), 1);
        assert!(out.contains("b<img src=\"PIXEL\""), "{out}");

        let (out, _) = run("<body>a</body>", false);
        assert_eq!(out, "<body>a</body>");
    }

    #[test]
    fn pixel_not_swallowed_by_unterminated_tag() {
        let (out, sink) = run(
            "<html><body>x<a href=\"http://cut.example/</body></html>",
            true,
        );
        assert!(sink.links.is_empty());
        assert!(out.starts_with("<html><body><img src=\"PIXEL\""), "{out}");
        let (out, _) = run("<p>x</p><!-- never closed", true);
        assert!(out.starts_with("<img src=\"PIXEL\""), "{out}");
        assert_eq!(out.matches("PIXEL").count(), 1);
    }

    #[test]
    fn marker_collision_is_avoided() {
        let (out, sink) = run(
            "MBSPLICE0x <a href=\"http://e.example/\">MBSPLICE1x</a>",
            true,
        );
        assert_eq!(sink.links.len(), 1);
        assert!(out.starts_with("MBSPLICE0x <a href=\"CLICK0\">MBSPLICE1x</a><img"));
    }

    #[test]
    fn meta_charset_fixed_when_asked() {
        let mut sink = LinkSink::default();
        let html = r#"<meta charset="windows-1252"><meta http-equiv="Content-Type" content="text/html; charset=iso-8859-1">"#;
        let pieces = rewrite(
            html,
            &Options {
                own_click_prefix: "",
                pixel: false,
                fix_meta_charset: true,
            },
            &mut sink,
        )
        .unwrap();
        let out = fill(&pieces, &[], "");
        assert_eq!(
            out,
            r#"<meta charset="utf-8"><meta http-equiv="Content-Type" content="text/html; charset=utf-8">"#
        );
    }

    #[test]
    fn split_conditional_forms() {
        assert_eq!(
            split_conditional("[if mso]><x><![endif]"),
            Some(("[if mso]>", "<x>", "<![endif]"))
        );
        assert_eq!(split_conditional(" plain comment "), None);
        assert_eq!(split_conditional("[if mso]>"), None);
    }
}
