//! Syntax highlighting for code blocks in replies: a small lexer that marks comments, strings,
//! numbers, keywords and literals for the languages models write most. It runs on the server
//! and in the browser (replies render as they stream), so it stays a few hundred bytes of
//! tables instead of a grammar engine; a language it does not know is shown plain.

/// How one language spells comments, strings and keywords.
struct Syntax {
    line_comments: &'static [&'static str],
    block_comment: Option<(&'static str, &'static str)>,
    quotes: &'static [char],
    /// Python's `"""` and `'''` strings span lines.
    triple_quotes: bool,
    keywords: &'static [&'static str],
    literals: &'static [&'static str],
}

const C_LIKE_LITERALS: &[&str] = &["true", "false", "null", "NULL", "nullptr"];

fn syntax(lang: &str) -> Option<Syntax> {
    let lang = lang.to_ascii_lowercase();
    Some(match lang.as_str() {
        "rust" | "rs" => Syntax {
            line_comments: &["//"],
            block_comment: Some(("/*", "*/")),
            quotes: &['"'],
            triple_quotes: false,
            keywords: &[
                "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else",
                "enum", "extern", "fn", "for", "if", "impl", "in", "let", "loop", "match", "mod",
                "move", "mut", "pub", "ref", "return", "self", "Self", "static", "struct", "super",
                "trait", "type", "unsafe", "use", "where", "while",
            ],
            literals: &["true", "false", "None", "Some", "Ok", "Err"],
        },
        "python" | "py" => Syntax {
            line_comments: &["#"],
            block_comment: None,
            quotes: &['"', '\''],
            triple_quotes: true,
            keywords: &[
                "and", "as", "assert", "async", "await", "break", "class", "continue", "def",
                "del", "elif", "else", "except", "finally", "for", "from", "global", "if",
                "import", "in", "is", "lambda", "nonlocal", "not", "or", "pass", "raise", "return",
                "try", "while", "with", "yield",
            ],
            literals: &["True", "False", "None", "self"],
        },
        "javascript" | "js" | "jsx" | "typescript" | "ts" | "tsx" => Syntax {
            line_comments: &["//"],
            block_comment: Some(("/*", "*/")),
            quotes: &['"', '\'', '`'],
            triple_quotes: false,
            keywords: &[
                "async",
                "await",
                "break",
                "case",
                "catch",
                "class",
                "const",
                "continue",
                "default",
                "delete",
                "do",
                "else",
                "export",
                "extends",
                "finally",
                "for",
                "from",
                "function",
                "if",
                "import",
                "in",
                "instanceof",
                "interface",
                "let",
                "new",
                "of",
                "return",
                "switch",
                "this",
                "throw",
                "try",
                "type",
                "typeof",
                "var",
                "void",
                "while",
                "yield",
            ],
            literals: &["true", "false", "null", "undefined", "NaN"],
        },
        "c" | "h" | "cpp" | "c++" | "cc" | "hpp" | "java" | "cs" | "csharp" | "go" | "kotlin" => {
            Syntax {
                line_comments: &["//"],
                block_comment: Some(("/*", "*/")),
                quotes: &['"', '\''],
                triple_quotes: false,
                keywords: &[
                    "auto",
                    "break",
                    "case",
                    "catch",
                    "char",
                    "class",
                    "const",
                    "continue",
                    "default",
                    "defer",
                    "delete",
                    "do",
                    "double",
                    "else",
                    "enum",
                    "extends",
                    "final",
                    "float",
                    "for",
                    "func",
                    "go",
                    "if",
                    "implements",
                    "import",
                    "include",
                    "int",
                    "interface",
                    "long",
                    "namespace",
                    "new",
                    "package",
                    "private",
                    "protected",
                    "public",
                    "return",
                    "short",
                    "signed",
                    "sizeof",
                    "static",
                    "struct",
                    "switch",
                    "template",
                    "this",
                    "throw",
                    "try",
                    "typedef",
                    "union",
                    "unsigned",
                    "using",
                    "var",
                    "virtual",
                    "void",
                    "while",
                ],
                literals: C_LIKE_LITERALS,
            }
        }
        "bash" | "sh" | "shell" | "zsh" | "console" => Syntax {
            line_comments: &["#"],
            block_comment: None,
            quotes: &['"', '\''],
            triple_quotes: false,
            keywords: &[
                "case", "do", "done", "elif", "else", "esac", "export", "fi", "for", "function",
                "if", "in", "local", "then", "until", "while",
            ],
            literals: &["true", "false"],
        },
        "sql" => Syntax {
            line_comments: &["--"],
            block_comment: Some(("/*", "*/")),
            quotes: &['\''],
            triple_quotes: false,
            keywords: &[
                "select",
                "from",
                "where",
                "insert",
                "into",
                "values",
                "update",
                "set",
                "delete",
                "create",
                "table",
                "drop",
                "alter",
                "join",
                "left",
                "right",
                "inner",
                "outer",
                "on",
                "group",
                "by",
                "order",
                "having",
                "limit",
                "and",
                "or",
                "not",
                "as",
                "distinct",
                "primary",
                "key",
                "references",
                "index",
                "SELECT",
                "FROM",
                "WHERE",
                "INSERT",
                "INTO",
                "VALUES",
                "UPDATE",
                "SET",
                "DELETE",
                "CREATE",
                "TABLE",
                "DROP",
                "ALTER",
                "JOIN",
                "LEFT",
                "RIGHT",
                "INNER",
                "OUTER",
                "ON",
                "GROUP",
                "BY",
                "ORDER",
                "HAVING",
                "LIMIT",
                "AND",
                "OR",
                "NOT",
                "AS",
                "DISTINCT",
                "PRIMARY",
                "KEY",
                "REFERENCES",
                "INDEX",
            ],
            literals: &["NULL", "null", "TRUE", "FALSE", "true", "false"],
        },
        "json" | "toml" | "yaml" | "yml" | "ini" => Syntax {
            line_comments: if lang == "json" { &[] } else { &["#"] },
            block_comment: None,
            quotes: &['"', '\''],
            triple_quotes: false,
            keywords: &[],
            literals: &["true", "false", "null", "yes", "no"],
        },
        _ => return None,
    })
}

fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

fn span(out: &mut String, class: &str, text: &str) {
    out.push_str("<span class=\"hl-");
    out.push_str(class);
    out.push_str("\">");
    escape_into(out, text);
    out.push_str("</span>");
}

/// Where a string opened at the start of `rest` ends (its length in bytes). Single-line strings
/// end at the line's end when unclosed, so one stray quote does not colour the whole block.
fn string_len(rest: &str, syntax: &Syntax) -> usize {
    let quote = rest.chars().next().unwrap_or('"');
    if syntax.triple_quotes {
        let triple: String = std::iter::repeat_n(quote, 3).collect();
        if let Some(body) = rest.strip_prefix(triple.as_str()) {
            return body.find(triple.as_str()).map_or(rest.len(), |end| end + 6);
        }
    }
    let mut escaped = false;
    for (i, c) in rest.char_indices().skip(1) {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '\n' if quote != '`' => return i,
            c if c == quote => return i + c.len_utf8(),
            _ => {}
        }
    }
    rest.len()
}

/// `code` as escaped HTML with `hl-*` spans; plain escaped text for a language not known here.
pub fn highlight(lang: &str, code: &str) -> String {
    let mut out = String::with_capacity(code.len() * 2);
    let Some(syntax) = syntax(lang) else {
        escape_into(&mut out, code);
        return out;
    };
    let mut i = 0;
    while i < code.len() {
        let rest = &code[i..];
        let Some(c) = rest.chars().next() else { break };
        let len = if let Some(marker) = syntax.line_comments.iter().find(|m| rest.starts_with(**m))
        {
            let len = rest.find('\n').unwrap_or(rest.len()).max(marker.len());
            span(&mut out, "comment", &rest[..len]);
            len
        } else if let Some((open, close)) =
            syntax.block_comment.filter(|(o, _)| rest.starts_with(o))
        {
            let len = rest[open.len()..]
                .find(close)
                .map_or(rest.len(), |end| open.len() + end + close.len());
            span(&mut out, "comment", &rest[..len]);
            len
        } else if syntax.quotes.contains(&c) {
            let len = string_len(rest, &syntax);
            span(&mut out, "string", &rest[..len]);
            len
        } else if c.is_ascii_digit() {
            let len = rest
                .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_' || ch == '.'))
                .unwrap_or(rest.len());
            span(&mut out, "number", &rest[..len]);
            len
        } else if c.is_alphabetic() || c == '_' {
            let len = rest
                .find(|ch: char| !(ch.is_alphanumeric() || ch == '_'))
                .unwrap_or(rest.len());
            let word = &rest[..len];
            if syntax.keywords.contains(&word) {
                span(&mut out, "keyword", word);
            } else if syntax.literals.contains(&word) {
                span(&mut out, "literal", word);
            } else {
                escape_into(&mut out, word);
            }
            len
        } else {
            escape_into(&mut out, &rest[..c.len_utf8()]);
            c.len_utf8()
        };
        i += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::highlight;

    #[test]
    fn marks_keywords_strings_comments_and_numbers() {
        let html = highlight("rust", "fn main() { let s = \"hi\"; // greet\n    42 }");
        assert!(
            html.contains("<span class=\"hl-keyword\">fn</span>"),
            "{html}"
        );
        assert!(
            html.contains("<span class=\"hl-string\">&quot;hi&quot;</span>"),
            "{html}"
        );
        assert!(
            html.contains("<span class=\"hl-comment\">// greet</span>"),
            "{html}"
        );
        assert!(
            html.contains("<span class=\"hl-number\">42</span>"),
            "{html}"
        );
        // An identifier that contains a keyword is not one.
        assert!(!highlight("rust", "format").contains("hl-keyword"));
    }

    #[test]
    fn python_triple_quotes_span_lines_and_unknown_languages_stay_plain() {
        let html = highlight("py", "x = '''a\nb'''\nprint(x)  # done");
        assert!(
            html.contains("<span class=\"hl-string\">&#39;&#39;&#39;a\nb&#39;&#39;&#39;</span>"),
            "{html}"
        );
        assert!(html.contains("hl-comment"), "{html}");
        assert_eq!(highlight("klingon", "<b>if</b>"), "&lt;b&gt;if&lt;/b&gt;");
    }

    #[test]
    fn hostile_text_stays_escaped_and_odd_input_ends() {
        for code in [
            "\"<script>",
            "/* <img src=x onerror=1>",
            "'",
            "\"\\",
            "0x<",
            "é\"ü",
        ] {
            for lang in ["rust", "python", "js", "sql", "bash", "json"] {
                let html = highlight(lang, code);
                assert!(
                    !html.contains("<script") && !html.contains("<img"),
                    "{lang}: {html}"
                );
            }
        }
    }
}
