//! Markdown to HTML that is safe to insert: raw HTML from the model or the user is shown as
//! text, never parsed, and links or images may only use http(s) or mailto URLs.

use pulldown_cmark::{html, CodeBlockKind, CowStr, Event, Options, Parser, Tag, TagEnd};

use super::highlight::highlight;

fn safe_url(url: &str) -> bool {
    let lower = url.trim().to_ascii_lowercase();
    lower.starts_with("http://")
        || lower.starts_with("https://")
        || lower.starts_with("mailto:")
        || lower.starts_with('#')
}

fn neutralise(url: CowStr<'_>) -> CowStr<'_> {
    if safe_url(&url) {
        url
    } else {
        CowStr::Borrowed("#")
    }
}

/// A fenced block's language as a class-safe word (`rust`, `c++`), or empty.
fn fence_language(info: &str) -> String {
    info.split(|c: char| c.is_whitespace() || c == ',' || c == '{')
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '#' | '-' | '_'))
        .take(20)
        .collect()
}

/// A code block with its language, a Copy button (the chat's one listener handles every
/// block) and highlighted, escaped code.
fn code_block(language: &str, code: &str) -> String {
    // The block's text ends with the newline before the closing fence; Copy should not.
    let code = code.strip_suffix('\n').unwrap_or(code);
    let label = if language.is_empty() {
        "code"
    } else {
        language
    };
    format!(
        "<div class=\"code-block\"><div class=\"code-bar\"><span class=\"code-lang\">{label}</span>\
         <button type=\"button\" class=\"copy-code\" data-testid=\"copy-code\">Copy</button></div>\
         <pre><code class=\"language-{label}\">{}</code></pre></div>",
        highlight(language, code)
    )
}

/// Replaces each code block's events with one HTML event holding the highlighted block.
fn with_code_blocks<'a>(events: impl Iterator<Item = Event<'a>>) -> Vec<Event<'a>> {
    let mut out = Vec::new();
    let mut open: Option<(String, String)> = None;
    for event in events {
        match (event, &mut open) {
            (Event::Start(Tag::CodeBlock(kind)), None) => {
                let language = match kind {
                    CodeBlockKind::Fenced(info) => fence_language(&info),
                    CodeBlockKind::Indented => String::new(),
                };
                open = Some((language, String::new()));
            }
            (Event::Text(text), Some((_, code))) => code.push_str(&text),
            (Event::End(TagEnd::CodeBlock), Some(_)) => {
                if let Some((language, code)) = open.take() {
                    out.push(Event::Html(code_block(&language, &code).into()));
                }
            }
            (event, _) => out.push(event),
        }
    }
    // A reply still streaming may stop inside a block.
    if let Some((language, code)) = open {
        out.push(Event::Html(code_block(&language, &code).into()));
    }
    out
}

pub fn render_markdown(source: &str) -> String {
    let options =
        Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS;
    let events = Parser::new_ext(source, options).map(|event| match event {
        // Raw HTML becomes literal text (the HTML writer escapes text).
        Event::Html(raw) | Event::InlineHtml(raw) => Event::Text(raw),
        Event::Start(Tag::Link {
            link_type,
            dest_url,
            title,
            id,
        }) => Event::Start(Tag::Link {
            link_type,
            dest_url: neutralise(dest_url),
            title,
            id,
        }),
        Event::Start(Tag::Image {
            link_type,
            dest_url,
            title,
            id,
        }) => Event::Start(Tag::Image {
            link_type,
            dest_url: neutralise(dest_url),
            title,
            id,
        }),
        other => other,
    });
    let mut out = String::with_capacity(source.len() * 3 / 2);
    // Raw HTML became text above, so the only HTML events left are the code blocks made here.
    html::push_html(&mut out, with_code_blocks(events).into_iter());
    out
}

#[cfg(test)]
mod tests {
    use super::render_markdown;

    #[test]
    fn formats_common_markdown() {
        let html = render_markdown("**Paris** is `the` capital.\n\n- a\n- b");
        assert!(html.contains("<strong>Paris</strong>"));
        assert!(html.contains("<code>the</code>"));
        assert!(html.contains("<li>a</li>"));
    }

    #[test]
    fn raw_html_and_scripts_never_reach_the_dom() {
        for attack in [
            "<script>alert(1)</script>",
            "hello <img src=x onerror=alert(1)> there",
            "<div onclick=\"x()\">block</div>",
            "<iframe src=\"https://evil\"></iframe>",
        ] {
            let html = render_markdown(attack);
            assert!(!html.contains("<script"), "{html}");
            assert!(!html.contains("<img"), "{html}");
            assert!(!html.contains("<div"), "{html}");
            assert!(!html.contains("<iframe"), "{html}");
            assert!(html.contains("&lt;"), "{html}");
        }
    }

    #[test]
    fn code_blocks_get_a_language_a_copy_button_and_escaped_highlighted_code() {
        let html = render_markdown("```rust title=x\nlet a = \"<b>\";\n```\n\n    indented <i>");
        assert!(
            html.contains("<span class=\"code-lang\">rust</span>"),
            "{html}"
        );
        assert!(html.contains("class=\"copy-code\""), "{html}");
        assert!(
            html.contains("<span class=\"hl-keyword\">let</span>"),
            "{html}"
        );
        assert!(
            html.contains("&lt;b&gt;") && !html.contains("<b>"),
            "{html}"
        );
        assert!(
            html.contains("indented &lt;i&gt;") && !html.contains("<i>"),
            "{html}"
        );
        // A fence's info string cannot inject markup through the class name.
        let html = render_markdown("```\"><script>\nx\n```");
        assert!(!html.contains("<script"), "{html}");
    }

    #[test]
    fn dangerous_link_schemes_are_neutralised() {
        let html = render_markdown(
            "[x](javascript:alert(1)) [y](https://example.com) ![i](data:image/svg+xml,abc)",
        );
        assert!(!html.contains("javascript:"), "{html}");
        assert!(!html.contains("data:"), "{html}");
        assert!(html.contains("href=\"https://example.com\""));
    }
}
