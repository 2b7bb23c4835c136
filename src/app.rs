//! The HTML shell and the router.

mod arena;
mod bench;
mod charts;
mod chat;
mod compare;
mod highlight;
mod history;
mod markdown;
mod models;
mod ner;
mod ocr;
mod sidebar;
mod stream;
mod widgets;

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, MetaTags, Stylesheet, Title};
use leptos_router::{
    components::{Route, Router, Routes},
    StaticSegment,
};

pub use markdown::render_markdown;
pub use widgets::format_bytes as widgets_format_bytes;

pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1" />
                <meta name="color-scheme" content="light dark" />
                <link rel="icon" type="image/svg+xml" href="/favicon.svg" />
                <AutoReload options=options.clone() />
                <HydrationScripts options />
                <MetaTags />
            </head>
            <body>
                <App />
            </body>
        </html>
    }
}

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    view! {
        <Stylesheet id="leptos" href="/pkg/quantlab.css" />
        <Title text="Quantlab" />
        <Router>
            <Routes fallback=|| view! { <p class="not-found">"Page not found."</p> }>
                <Route path=StaticSegment("") view=chat::ChatPage />
                <Route path=StaticSegment("compare") view=compare::ComparePage />
                <Route path=StaticSegment("arena") view=arena::ArenaPage />
                <Route path=StaticSegment("ner") view=ner::NerPage />
                <Route path=StaticSegment("ocr") view=ocr::OcrPage />
                <Route path=StaticSegment("bench") view=bench::BenchPage />
                <Route path=StaticSegment("models") view=models::ModelsPage />
            </Routes>
        </Router>
    }
}
