//! An HTML body on its own, without a message around it: what follow from
//! compose gets from Outlook, which sends the message itself. The links are
//! rewritten exactly as in a message's HTML part (see [`super::html`]); a copy
//! is the HTML with the holes filled, no MIME and no transfer encoding.

use super::html::{self, Piece};
use super::links::escape_attr;
use super::{too_many, ErrorKind, Limits, PrepareError, Tracking};

/// An HTML document parsed once, ready to be filled with tracking URLs.
#[derive(Debug)]
pub struct HtmlBody {
    pieces: Vec<Piece>,
    links: Vec<String>,
    /// Each link's original attribute value, escaped: written when no click
    /// URL is given for it.
    original: Vec<String>,
}

impl HtmlBody {
    /// Finds the trackable links of `html` and the place of the pixel.
    /// `own_click_prefix` as for [`super::Draft::parse`].
    pub fn parse(
        html: &str,
        own_click_prefix: &str,
        limits: &Limits,
    ) -> Result<HtmlBody, PrepareError> {
        let mut sink = html::LinkSink::default();
        let opts = html::Options {
            own_click_prefix,
            pixel: true,
            fix_meta_charset: false,
        };
        let pieces = html::rewrite(html, &opts, &mut sink).map_err(|e| {
            PrepareError::new(
                ErrorKind::Malformed,
                format!("The HTML body could not be rewritten: {e}."),
            )
        })?;
        if sink.links.len() > limits.max_links {
            return Err(too_many(sink.links.len(), limits));
        }
        Ok(HtmlBody {
            pieces,
            links: sink.links,
            original: sink.original,
        })
    }

    /// Trackable links in document order, entity-decoded and trimmed.
    pub fn links(&self) -> &[String] {
        &self.links
    }

    /// The HTML with `links()[i]` replaced by `t.click_urls[i]` and the pixel.
    pub fn render(&self, t: &Tracking<'_>) -> String {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(s) => out.push_str(s),
                Piece::Link(n) => match t.click_urls.get(*n) {
                    Some(url) => out.push_str(&escape_attr(url)),
                    None => out.push_str(self.original.get(*n).map_or("", String::as_str)),
                },
                Piece::PixelUrl => out.push_str(&escape_attr(t.pixel_url)),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_rewritten_and_pixel_added() {
        let b = HtmlBody::parse(
            "<p>Hi</p><a href=\"https://e.example/?a=1&amp;b=2\">x</a> <a href=\"mailto:q@x.test\">m</a>\n<a href=\"https://t.example/c/own\">o</a>",
            "https://t.example/c/",
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(b.links(), ["https://e.example/?a=1&b=2"]);
        let out = b.render(&Tracking {
            pixel_url: "https://t.example/o/P.gif",
            click_urls: &["https://t.example/c/T/D?x=1&y=2".to_string()],
        });
        assert!(
            out.starts_with("<p>Hi</p><a href=\"https://t.example/c/T/D?x=1&amp;y=2\">x</a>"),
            "{out}"
        );
        assert!(
            out.contains("mailto:q@x.test") && out.contains("https://t.example/c/own"),
            "{out}"
        );
        assert!(out.contains("\n<a"), "line breaks kept: {out}");
        assert!(
            out.contains("<img src=\"https://t.example/o/P.gif\""),
            "{out}"
        );
        // Without a click URL the link stays as written.
        let kept = b.render(&Tracking {
            pixel_url: "p",
            click_urls: &[],
        });
        assert!(
            kept.contains("href=\"https://e.example/?a=1&amp;b=2\""),
            "{kept}"
        );
    }

    #[test]
    fn too_many_links_refused() {
        let html = "<a href=\"https://e.example/1\">1</a><a href=\"https://e.example/2\">2</a>";
        let e = HtmlBody::parse(html, "", &Limits { max_links: 1 }).unwrap_err();
        assert_eq!(e.kind, ErrorKind::TooManyLinks);
    }
}
