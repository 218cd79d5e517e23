//! Sans-IO parsers and checks: kubeconfigs, JWT claims, PEM/x509, SPIFFE IDs.
//! Nothing here touches the network, so it is all unit-tested.

pub mod jwt;
pub mod kubeconfig;
pub mod sanitize;
pub mod x509;

/// The first `max` characters of `s`, and whether anything was cut: for
/// quoting the start of bad input in an error message.
pub fn head(s: &str, max: usize) -> (String, bool) {
    let mut chars = s.chars();
    let head: String = chars.by_ref().take(max).collect();
    (head, chars.next().is_some())
}

#[cfg(test)]
mod tests {
    #[test]
    fn head_cuts_at_characters_not_bytes() {
        assert_eq!(super::head("héllo", 2), ("hé".to_string(), true));
        assert_eq!(super::head("hé", 2), ("hé".to_string(), false));
        assert_eq!(super::head("", 3), (String::new(), false));
    }
}
