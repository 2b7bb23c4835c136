//! The OCR tab: drop, pick or paste an image; it is previewed with each line's box drawn over
//! it, and the lines listed with their confidence (hover one to light up its box), with
//! copy-all and metrics. The upload goes to `POST /api/ocr` as multipart.

use leptos::prelude::*;

use super::widgets::{copy_to_clipboard, waits, TopBar};
use crate::{
    api::analysis_fns::ocr_models,
    ocr::{OcrEngineInfo, OcrOutput},
};

/// A sample page shipped with the app, so the tab can be tried without a file at hand.
#[cfg(feature = "hydrate")]
const SAMPLE_URL: &str = "/samples/ocr-sample.jpg";

#[component]
pub fn OcrPage() -> impl IntoView {
    let models = Resource::new(|| (), |_| ocr_models());
    view! {
        <div class="layout">
            <TopBar active="/ocr" />
            <Transition fallback=|| view! { <p class="loading">"Loading OCR engines…"</p> }>
                {move || Suspend::new(async move {
                    match models.await {
                        Ok(list) => view! { <OcrWorkspace engines=list /> }.into_any(),
                        Err(e) => view! { <p class="error" role="alert">{format!("Cannot list OCR engines: {e}")}</p> }.into_any(),
                    }
                })}
            </Transition>
        </div>
    }
}

/// What the tab shows: the chosen image, and the reading once it arrives.
#[derive(Clone, Default)]
struct Shown {
    preview_url: Option<String>,
    file_name: String,
    output: Option<OcrOutput>,
    error: Option<String>,
}

#[component]
fn OcrWorkspace(engines: Vec<OcrEngineInfo>) -> impl IntoView {
    let default_id = engines
        .iter()
        .find(|e| e.default)
        .or(engines.first())
        .map(|e| e.id.clone())
        .unwrap_or_default();
    let engine = RwSignal::new(default_id);
    let shown = RwSignal::new(Shown::default());
    let busy = RwSignal::new(false);
    let hovered = RwSignal::new(None::<usize>);
    let dragging = RwSignal::new(false);
    let copied = RwSignal::new(false);

    let engines_for_hint = engines.clone();
    let current = move || {
        engines_for_hint
            .iter()
            .find(|e| e.id == engine.get())
            .cloned()
    };
    let options = engines
        .iter()
        .map(|e| view! { <option value=e.id.clone()>{e.name.clone()}</option> })
        .collect_view();

    #[cfg(feature = "hydrate")]
    let submit = move |blob: web_sys::Blob, name: String| {
        if busy.get_untracked() {
            return;
        }
        if let Some(old) = shown.get_untracked().preview_url {
            let _ = web_sys::Url::revoke_object_url(&old);
        }
        shown.set(Shown {
            preview_url: web_sys::Url::create_object_url_with_blob(&blob).ok(),
            file_name: name.clone(),
            output: None,
            error: None,
        });
        hovered.set(None);
        copied.set(false);
        busy.set(true);
        let model = engine.get_untracked();
        leptos::task::spawn_local(async move {
            let outcome = browser::upload(&blob, &name, &model).await;
            shown.update(|s| match outcome {
                Ok(output) => s.output = Some(output),
                Err(message) => s.error = Some(message),
            });
            busy.set(false);
        });
    };

    #[cfg(feature = "hydrate")]
    let on_pick = move |ev: leptos::ev::Event| {
        use wasm_bindgen::JsCast;
        let input: Option<web_sys::HtmlInputElement> = ev.target().and_then(|t| t.dyn_into().ok());
        if let Some(file) = input
            .as_ref()
            .and_then(|i| i.files())
            .and_then(|f| f.get(0))
        {
            let name = file.name();
            submit(file.into(), name);
        }
        // Picking the same file again must fire `change` again.
        if let Some(input) = input {
            input.set_value("");
        }
    };
    #[cfg(not(feature = "hydrate"))]
    let on_pick = move |_: leptos::ev::Event| {};

    #[cfg(feature = "hydrate")]
    let on_drop = move |ev: leptos::ev::DragEvent| {
        ev.prevent_default();
        dragging.set(false);
        let file = ev
            .data_transfer()
            .and_then(|d| d.files())
            .and_then(|f| f.get(0));
        match file {
            Some(file) => {
                let name = file.name();
                submit(file.into(), name);
            }
            None => shown.update(|s| s.error = Some("Drop an image file here.".into())),
        }
    };
    #[cfg(not(feature = "hydrate"))]
    let on_drop = move |ev: leptos::ev::DragEvent| ev.prevent_default();

    #[cfg(feature = "hydrate")]
    let on_sample = move |_| {
        leptos::task::spawn_local(async move {
            match browser::fetch_blob(SAMPLE_URL).await {
                Ok(blob) => submit(blob, "ocr-sample.jpg".into()),
                Err(message) => shown.update(|s| s.error = Some(message)),
            }
        });
    };
    #[cfg(not(feature = "hydrate"))]
    let on_sample = move |_| {};

    // Pasting an image anywhere on the page reads it.
    #[cfg(feature = "hydrate")]
    {
        let handle = window_event_listener(leptos::ev::paste, move |ev| {
            let file = ev
                .clipboard_data()
                .and_then(|d| d.files())
                .and_then(|f| f.get(0));
            if let Some(file) = file {
                ev.prevent_default();
                let name = if file.name().is_empty() {
                    "pasted image".to_string()
                } else {
                    file.name()
                };
                submit(file.into(), name);
            }
        });
        on_cleanup(move || handle.remove());
    }

    let copy_all = move |_| {
        let text = shown.with_untracked(|s| {
            s.output
                .as_ref()
                .map(|o| {
                    o.lines
                        .iter()
                        .map(|l| l.text.as_str())
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .unwrap_or_default()
        });
        copy_to_clipboard(&text, move || copied.set(true));
    };

    view! {
        <main class="tool" data-testid="ocr-page">
            <section class="tool-form" aria-label="Image to read">
                <div class="tool-row">
                    <label class="tool-field">
                        "Engine"
                        <select data-testid="ocr-engine" prop:value=move || engine.get()
                            on:change=move |ev| engine.set(event_target_value(&ev))>
                            {options}
                        </select>
                    </label>
                    <button class="chip" data-testid="ocr-sample" on:click=on_sample disabled=move || busy.get()>"Try a sample page"</button>
                </div>
                {move || current().map(|e| view! {
                    <p class="hint">{format!("{} Licence: {}.", e.description, e.license)}</p>
                    {e.unavailable.map(|why| view! { <p class="unavailable" role="status">{why}</p> })}
                })}
                <label class="dropzone" class:dragging=move || dragging.get() data-testid="ocr-dropzone"
                    on:dragover=move |ev: leptos::ev::DragEvent| { ev.prevent_default(); dragging.set(true); }
                    on:dragleave=move |_| dragging.set(false)
                    on:drop=on_drop>
                    <input type="file" accept="image/png,image/jpeg,image/webp,image/gif,image/bmp"
                        data-testid="ocr-file" class="visually-hidden" on:change=on_pick />
                    <strong>"Drop an image here, or click to choose one"</strong>
                    <span class="hint">"…or paste one (Ctrl+V). PNG, JPEG, WebP, GIF or BMP, up to 20 MiB and 40 megapixels."</span>
                </label>
            </section>
            {move || busy.get().then(|| view! {
                <p class="hint" role="status" data-testid="ocr-busy">{format!("Reading {}…", shown.with(|s| s.file_name.clone()))}</p>
            })}
            {move || shown.with(|s| s.error.clone()).map(|e| view! {
                <p class="error" role="alert" data-testid="ocr-error">{e}</p>
            })}
            {move || shown.with(|s| s.preview_url.clone()).map(|url| {
                let output = shown.with(|s| s.output.clone());
                view! {
                    <section class="ocr-result" aria-label="Reading">
                        <figure class="ocr-figure" data-testid="ocr-figure">
                            <img src=url alt="The uploaded image" />
                            {output.clone().map(|o| view! { <Boxes output=o hovered /> })}
                        </figure>
                        {output.map(|o| view! { <Lines output=o hovered copied copy_all /> })}
                    </section>
                }
            })}
        </main>
    }
}

/// The boxes over the image: an SVG in the image's own pixel coordinates, stretched with it.
#[component]
fn Boxes(output: OcrOutput, hovered: RwSignal<Option<usize>>) -> impl IntoView {
    let (width, height) = (output.metrics.width, output.metrics.height);
    let polygons = output
        .lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let points = line
                .quad
                .points
                .iter()
                .map(|[x, y]| format!("{x:.1},{y:.1}"))
                .collect::<Vec<_>>()
                .join(" ");
            view! {
                <polygon points=points class="ocr-box" class:hovered=move || hovered.get() == Some(i)
                    data-testid="ocr-box"
                    on:mouseenter=move |_| hovered.set(Some(i)) on:mouseleave=move |_| hovered.set(None)>
                    <title>{match line.confidence {
                        Some(c) => format!("{} ({:.0}%)", line.text, c * 100.0),
                        None => line.text.clone(),
                    }}</title>
                </polygon>
            }
        })
        .collect_view();
    view! {
        <svg class="ocr-overlay" viewBox=format!("0 0 {width} {height}") preserveAspectRatio="none" aria-hidden="true">
            {polygons}
        </svg>
    }
}

#[component]
fn Lines(
    output: OcrOutput,
    hovered: RwSignal<Option<usize>>,
    copied: RwSignal<bool>,
    copy_all: impl Fn(leptos::ev::MouseEvent) + 'static,
) -> impl IntoView {
    let m = output.metrics.clone();
    let lines = output
        .lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let level = match line.confidence {
                Some(c) if c >= 0.9 => "high",
                Some(c) if c >= 0.7 => "medium",
                Some(_) => "low",
                None => "unknown",
            };
            let shown = line
                .confidence
                .map_or_else(|| "—".to_string(), |c| format!("{:.0}%", c * 100.0));
            view! {
                <li class="ocr-line" class:hovered=move || hovered.get() == Some(i) data-testid="ocr-line"
                    on:mouseenter=move |_| hovered.set(Some(i)) on:mouseleave=move |_| hovered.set(None)>
                    <span class="ocr-text">{line.text.clone()}</span>
                    <span class=format!("confidence {level}") title="Mean probability of the line's characters (this engine may report none)">
                        {shown}
                    </span>
                </li>
            }
        })
        .collect_view();
    let empty = output.lines.is_empty();
    view! {
        <div class="ocr-lines">
            <div class="metrics" data-testid="ocr-metrics">
                <span class="metrics-main">{format!(
                    "{} lines · {} characters · {:.0} ms · {} detections · {}×{} px",
                    m.lines, m.characters, m.millis, m.detections, m.width, m.height
                )}</span>
                <span class="metrics-detail">{format!(
                    "{} · decode {:.0} ms, detection {:.0} ms, recognition {:.0} ms{}",
                    m.engine, m.decode_millis, m.detect_millis, m.recognize_millis,
                    waits(m.queued_millis, m.load_millis)
                )}</span>
            </div>
            {if empty {
                view! { <p class="hint" data-testid="ocr-empty">"No text found in this image."</p> }.into_any()
            } else {
                view! {
                    <button class="chip" data-testid="ocr-copy" on:click=copy_all>
                        {move || if copied.get() { "Copied" } else { "Copy all text" }}
                    </button>
                    <ol class="ocr-line-list" data-testid="ocr-lines">{lines}</ol>
                }.into_any()
            }}
        </div>
    }
}

/// Talking to the server from the browser: the multipart upload and the sample image.
#[cfg(feature = "hydrate")]
mod browser {
    use wasm_bindgen::JsCast;
    use wasm_bindgen_futures::JsFuture;

    use crate::ocr::OcrOutput;

    async fn fetch(url: &str, init: &web_sys::RequestInit) -> Result<web_sys::Response, String> {
        let window = web_sys::window().ok_or("no window")?;
        let response = JsFuture::from(window.fetch_with_str_and_init(url, init))
            .await
            .map_err(|_| "The server cannot be reached; is it running?".to_string())?;
        response
            .dyn_into()
            .map_err(|_| "The server's answer was not a response.".to_string())
    }

    pub async fn fetch_blob(url: &str) -> Result<web_sys::Blob, String> {
        let response = fetch(url, &web_sys::RequestInit::new()).await?;
        let promise = response.blob().map_err(|_| "Cannot read the sample.")?;
        JsFuture::from(promise)
            .await
            .ok()
            .and_then(|b| b.dyn_into().ok())
            .ok_or_else(|| "Cannot read the sample.".to_string())
    }

    pub async fn upload(
        blob: &web_sys::Blob,
        name: &str,
        model: &str,
    ) -> Result<OcrOutput, String> {
        let form = web_sys::FormData::new().map_err(|_| "Cannot build the upload.")?;
        form.append_with_blob_and_filename("file", blob, name)
            .map_err(|_| "Cannot build the upload.")?;
        form.append_with_str("model", model)
            .map_err(|_| "Cannot build the upload.")?;
        let init = web_sys::RequestInit::new();
        init.set_method("POST");
        init.set_body(&form);
        let response = fetch("/api/ocr", &init).await?;
        let status = response.status();
        let text = match response.text() {
            Ok(promise) => JsFuture::from(promise)
                .await
                .ok()
                .and_then(|t| t.as_string())
                .unwrap_or_default(),
            Err(_) => String::new(),
        };
        if response.ok() {
            serde_json::from_str(&text)
                .map_err(|e| format!("The server's answer was not understood: {e}"))
        } else {
            // Our errors are `{"error": {"message": …}}`.
            let message = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                .unwrap_or(text);
            Err(format!("{message} (HTTP {status})"))
        }
    }
}
