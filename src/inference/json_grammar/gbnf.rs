//! GBNF, llama.cpp's grammar notation: string literals, rule names, bounded repetition, and the
//! rules every JSON grammar uses.

/// Rules every grammar may use, by name. Numbers take at most 16 digits per part, so a small
/// model cannot run on writing digits until `max_tokens`.
pub(super) const PRIMITIVES: [(&str, &str); 9] = [
    ("space", r#"| " " | "\n" [ \t]{0,20}"#),
    (
        "char",
        r#"[^"\\\x7F\x00-\x1F] | [\\] (["\\/bfnrt] | "u" [0-9a-fA-F]{4})"#,
    ),
    ("string", r#""\"" char* "\"" space"#),
    ("boolean", r#"("true" | "false") space"#),
    ("null", r#""null" space"#),
    ("integral-part", "[0] | [1-9] [0-9]{0,15}"),
    ("integer", r#"("-"? integral-part) space"#),
    (
        "number",
        r#"("-"? integral-part) ("." [0-9]{1,16})? ([eE] [-+]? [0-9]{1,16})? space"#,
    ),
    (
        "value",
        r#"object | array | string | number | boolean | null"#,
    ),
];

/// A GBNF string literal matching `text` exactly.
pub(super) fn literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02X}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A rule name from a property path (GBNF names are `[a-zA-Z0-9-]+`).
pub(super) fn rule_name(hint: &str) -> String {
    let name: String = hint
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let name = name.trim_matches('-');
    if name.is_empty() {
        "rule".into()
    } else {
        name.into()
    }
}

/// `{min,max}` repetition of `item` separated by `separator`.
pub(super) fn repeat(item: &str, separator: &str, min: u64, max: Option<u64>) -> String {
    let rest_min = min.saturating_sub(1);
    let some = match max {
        Some(0) => return String::new(),
        Some(1) => item.to_string(),
        Some(max) => format!("{item} ({separator} {item}){{{rest_min},{}}}", max - 1),
        None => format!("{item} ({separator} {item}){{{rest_min},}}"),
    };
    if min == 0 {
        format!("({some})?")
    } else {
        some
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_escape_quotes_backslashes_and_controls() {
        assert_eq!(literal(r#""a\b""#), r#""\"a\\b\"""#);
        assert_eq!(literal("x\ny\u{1}"), r#""x\ny\x01""#);
    }
}
