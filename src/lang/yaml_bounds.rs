//! A bound on YAML that comes from a node, checked before any parser sees
//! it. The YAML scanner khard uses (serde_yaml over unsafe-libyaml) costs
//! quadratic time on deeply nested flow collections and checks its own
//! recursion limit only after scanning the whole document: one 256 KiB
//! drop-in of `[[[[…` cost minutes of the operator's CPU. A k3s config has
//! a handful of flat lists; these bounds leave it room by orders of
//! magnitude.

/// Deepest nesting of flow collections (`[`, `{`).
pub const MAX_FLOW_DEPTH: usize = 32;
/// Most flow collections in one document.
pub const MAX_FLOW_COLLECTIONS: usize = 10_000;
/// Most aliases (`*name`), which expand to copies of what they name.
pub const MAX_ALIASES: usize = 100;

/// Err says which bound `text` exceeds; quoted scalars and comments do not
/// count.
pub fn check(text: &str) -> Result<(), String> {
    let (mut depth, mut collections, mut aliases) = (0usize, 0usize, 0usize);
    let mut quote: Option<char> = None;
    let mut comment = false;
    let mut prev = '\n';
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if comment {
            comment = c != '\n';
        } else if let Some(q) = quote {
            if q == '"' && c == '\\' {
                chars.next();
            } else if c == q {
                quote = None;
            }
        } else {
            match c {
                '#' if prev.is_whitespace() => comment = true,
                '\'' | '"' if prev.is_whitespace() || "[{,:".contains(prev) => quote = Some(c),
                '[' | '{' => {
                    depth += 1;
                    collections += 1;
                    if depth > MAX_FLOW_DEPTH {
                        return Err(format!(
                            "YAML nested deeper than {MAX_FLOW_DEPTH} flow collections; refused unread"
                        ));
                    }
                    if collections > MAX_FLOW_COLLECTIONS {
                        return Err(format!(
                            "YAML with more than {MAX_FLOW_COLLECTIONS} flow collections; refused unread"
                        ));
                    }
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                '*' if prev.is_whitespace() || "[{,:-".contains(prev) => {
                    aliases += 1;
                    if aliases > MAX_ALIASES {
                        return Err(format!(
                            "YAML with more than {MAX_ALIASES} aliases; refused unread"
                        ));
                    }
                }
                _ => {}
            }
        }
        prev = c;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_nesting_is_refused_and_real_configs_pass() {
        let hostile = format!("a: {}", "[".repeat(256 * 1024));
        assert!(check(&hostile).unwrap_err().contains("deeper than"));
        let wide = "a: [".to_owned() + &"[],".repeat(20_000) + "]";
        assert!(check(&wide).unwrap_err().contains("flow collections"));
        let aliases = "a: &x [1]\nb: [".to_owned() + &"*x, ".repeat(200) + "]";
        assert!(check(&aliases).unwrap_err().contains("aliases"));
        let config = "# a [comment [[[\ntls-san: [a.example, \"b[[[\"]\nkube-apiserver-arg:\n  - 'x=[{'\n  - y={z}\nnode-label: {a: b}\n";
        assert_eq!(check(config), Ok(()));
        // What the depth bound leaves: 32 levels still parse.
        let deep = format!("a: {}{}", "[".repeat(32), "]".repeat(32));
        assert_eq!(check(&deep), Ok(()));
        assert!(serde_yaml::from_str::<serde_yaml::Value>(&deep).is_ok());
    }
}
