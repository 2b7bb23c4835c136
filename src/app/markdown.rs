//! Markdown to HTML that is safe to insert: raw HTML from the model or the user is shown as
//! text, never parsed, and links or images may only use http(s) or mailto URLs.

use pulldown_cmark::{html, CowStr, Event, Options, Parser, Tag};

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
    html::push_html(&mut out, events);
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
    fn dangerous_link_schemes_are_neutralised() {
        let html = render_markdown(
            "[x](javascript:alert(1)) [y](https://example.com) ![i](data:image/svg+xml,abc)",
        );
        assert!(!html.contains("javascript:"), "{html}");
        assert!(!html.contains("data:"), "{html}");
        assert!(html.contains("href=\"https://example.com\""));
    }
}
