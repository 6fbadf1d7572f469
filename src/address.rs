//! Email addresses as the API takes them: one check and one normal form
//! (trimmed, lowercased) for users, contacts, data subjects and compose
//! recipients. Pure.

/// Returns the normalized address if `s` looks like a single email address.
pub fn normalize_address(s: &str) -> Option<String> {
    let a = s.trim().to_lowercase();
    let (local, domain) = a.split_once('@')?;
    let ok = !local.is_empty()
        && !domain.is_empty()
        && a.len() <= 254
        && !domain.contains('@')
        && !a
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>(),;:\"[]\\".contains(c));
    ok.then_some(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_normalized_and_checked() {
        assert_eq!(
            normalize_address("  Ann@Example.COM "),
            Some("ann@example.com".into())
        );
        for bad in ["", "ann", "@x", "a@", "a b@x", "a@b@c", "<a@b>"] {
            assert_eq!(normalize_address(bad), None, "{bad}");
        }
    }
}
