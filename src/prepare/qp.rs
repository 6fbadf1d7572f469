//! Quoted-printable encoding split around splice points.
//!
//! A rewritten HTML part is encoded once, at parse time, as a list of
//! literal segments with holes for the per-recipient URLs. To let the holes
//! take any length without re-wrapping the text around them, every hole
//! starts at the beginning of a line and ends with a soft line break: the
//! literal before a hole ends with `=` + newline (unless it already ends at
//! the start of a line), and the hole's own encoding ends the same way. So
//! each piece is encoded independently with lines of at most
//! [`MAX_LINE`] characters (RFC 2045 allows 76), and `render` only copies
//! bytes.

/// Longest encoded line we write, soft-break `=` included (RFC 2045: 76).
pub(crate) const MAX_LINE: usize = 76;

/// Encodes `text` as quoted-printable lines starting at column 0.
///
/// Line breaks in `text` (LF or CRLF) become hard breaks written as `nl`; a
/// lone CR is encoded. If `soft_break_at_end` is true the output ends at the
/// start of a line (a soft break is added if needed), so that a splice can
/// follow.
pub(crate) fn encode_literal(text: &str, nl: &[u8], soft_break_at_end: bool, out: &mut Vec<u8>) {
    let b = text.as_bytes();
    let mut col = 0usize;
    let mut i = 0usize;
    while i < b.len() {
        let c = b[i];
        if c == b'\n' {
            out.extend_from_slice(nl);
            col = 0;
            i += 1;
            continue;
        }
        if c == b'\r' && b.get(i + 1) == Some(&b'\n') {
            out.extend_from_slice(nl);
            col = 0;
            i += 2;
            continue;
        }
        let next = b.get(i + 1).copied();
        let literal = match c {
            // Whitespace is literal unless it would end a line (or the part),
            // where transports may strip it.
            b' ' | b'\t' => !matches!(next, None | Some(b'\n') | Some(b'\r')),
            // "From " at the start of a line gets mangled by mbox tools.
            b'F' if col == 0 && b[i..].starts_with(b"From ") => false,
            // A lone "." line can end an SMTP DATA block on careless relays.
            b'.' if col == 0 => false,
            // "--" could make a boundary delimiter of an enclosing multipart
            // where the decoded text had none (a lone CR between the dashes
            // that the decoder dropped; lenient parsers even match one in
            // mid-line): the first dash of each pair is encoded.
            b'-' if next == Some(b'-') => false,
            b'=' => false,
            33..=126 => true,
            _ => false,
        };
        let width = if literal { 1 } else { 3 };
        if col + width > MAX_LINE - 1 {
            out.push(b'=');
            out.extend_from_slice(nl);
            col = 0;
        }
        if literal {
            out.push(c);
        } else {
            push_hex(c, out);
        }
        col += width;
        i += 1;
    }
    if soft_break_at_end && col > 0 {
        out.push(b'=');
        out.extend_from_slice(nl);
    }
}

/// Encodes one spliced value (a URL) for a double-quoted HTML attribute:
/// HTML-escapes it, then writes it as quoted-printable lines starting at
/// column 0 and ending with a soft line break.
pub(crate) fn encode_splice(value: &str, nl: &[u8], out: &mut Vec<u8>) {
    // Fast path: the caller's URLs are `[A-Za-z0-9:/._-]`, which need neither
    // HTML escaping nor QP encoding; only wrap them.
    if value
        .bytes()
        .all(|c| matches!(c, 33..=126) && !matches!(c, b'=' | b'&' | b'"' | b'<' | b'>'))
        && !value.contains("--")
    {
        for chunk in value.as_bytes().chunks(MAX_LINE - 1) {
            out.extend_from_slice(chunk);
            out.push(b'=');
            out.extend_from_slice(nl);
        }
        return;
    }
    encode_splice_raw(&super::links::escape_attr(value), nl, out);
}

/// Like [`encode_splice`] for a value that is already escaped for a
/// double-quoted attribute.
pub(crate) fn encode_splice_raw(escaped: &str, nl: &[u8], out: &mut Vec<u8>) {
    let mut col = 0usize;
    let b = escaped.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        // Inside the hole every byte is followed by more text (the soft
        // break at least), so whitespace could stay literal; encoding it
        // anyway keeps the rule simple. "--" is broken as in `encode_literal`.
        let literal =
            matches!(c, 33..=126) && c != b'=' && !(c == b'-' && b.get(i + 1) == Some(&b'-'));
        let width = if literal { 1 } else { 3 };
        if col + width > MAX_LINE - 1 {
            out.push(b'=');
            out.extend_from_slice(nl);
            col = 0;
        }
        if literal {
            out.push(c);
        } else {
            push_hex(c, out);
        }
        col += width;
    }
    if col > 0 {
        out.push(b'=');
        out.extend_from_slice(nl);
    }
}

fn push_hex(c: u8, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push(b'=');
    out.push(HEX[usize::from(c >> 4)]);
    out.push(HEX[usize::from(c & 15)]);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A strict quoted-printable decoder for the tests (RFC 2045 6.7).
    pub(crate) fn decode(qp: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < qp.len() {
            match qp[i] {
                b'=' if qp[i + 1..].starts_with(b"\r\n") => i += 3,
                b'=' if qp[i + 1..].starts_with(b"\n") => i += 2,
                b'=' => {
                    let hex = std::str::from_utf8(&qp[i + 1..i + 3]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 3;
                }
                b'\r' if qp[i + 1..].starts_with(b"\n") => {
                    out.push(b'\n');
                    i += 2;
                }
                c => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        out
    }

    fn max_line(b: &[u8]) -> usize {
        b.split(|&c| c == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l).len())
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn literal_round_trips_and_wraps() {
        let text = format!(
            "<p style=\"a=b\">{}</p>\nFrom here\n.\ntrailing \nпривет\r\nend ",
            "x".repeat(300)
        );
        for nl in [&b"\r\n"[..], &b"\n"[..]] {
            let mut out = Vec::new();
            encode_literal(&text, nl, false, &mut out);
            assert!(
                max_line(&out) <= MAX_LINE,
                "{}",
                String::from_utf8_lossy(&out)
            );
            assert_eq!(decode(&out), text.replace("\r\n", "\n").as_bytes());
            assert!(!out.windows(2).any(|w| w == b" \n" || w == b" \r"));
            assert!(!out.ends_with(b" "));
        }
    }

    #[test]
    fn double_dashes_never_appear_encoded() {
        for text in ["a--b", "--b\n---\n-", "<!-- x -->", "Cont-\r-b"] {
            let mut out = Vec::new();
            encode_literal(text, b"\r\n", false, &mut out);
            assert!(!out.windows(2).any(|w| w == b"--"), "{text}: {out:?}");
            assert_eq!(decode(&out), text.as_bytes(), "{text}");
            let mut out = Vec::new();
            encode_splice(text, b"\r\n", &mut out);
            assert!(!out.windows(2).any(|w| w == b"--"), "{text}: {out:?}");
        }
    }

    #[test]
    fn soft_break_at_end_puts_next_piece_at_line_start() {
        let mut out = Vec::new();
        encode_literal("<a href=\"", b"\r\n", true, &mut out);
        assert_eq!(out, b"<a href=3D\"=\r\n");
        let mut out = Vec::new();
        encode_literal("line\n", b"\r\n", true, &mut out);
        assert_eq!(out, b"line\r\n");
    }

    #[test]
    fn splice_fast_and_general_paths() {
        let url = format!("https://host/c/{}", "A".repeat(200));
        let mut out = Vec::new();
        encode_splice(&url, b"\r\n", &mut out);
        assert!(max_line(&out) <= MAX_LINE);
        assert!(out.ends_with(b"=\r\n"));
        assert_eq!(decode(&out), url.as_bytes());

        let odd = "https://h/x?a=1&b=\"2\" é\n";
        let mut out = Vec::new();
        encode_splice(odd, b"\n", &mut out);
        assert!(max_line(&out) <= MAX_LINE);
        assert_eq!(
            String::from_utf8(decode(&out)).unwrap(),
            "https://h/x?a=1&amp;b=&quot;2&quot; é\n"
        );
    }
}
