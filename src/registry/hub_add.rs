//! `quantlab models add`: a GGUF file from the Hugging Face hub, named by repository and file.
//! It is downloaded into hf-hub's cache (resumable), checked by the GGUF checker and llama.cpp's
//! loader, described from its own metadata (architecture, name, licence, context, parameters,
//! type, measured bits per weight) with its sha256, linked into the models folder and listed in
//! the user registry. Nothing is listed before the file passed the check, and a refused file is
//! removed from the cache so a retry downloads it afresh.

use std::path::{Path, PathBuf};

use hf_hub::{Cache, Repo, RepoType};
use serde::{Deserialize, Serialize};

use super::{
    derived::{self, NewModel, WrittenHub},
    fetch::{self, FetchError},
    progress, Registry, RegistryError,
};
use crate::{inference::llama_cpp::inspect, types::EngineKind};

/// A file of a hub repository.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubFile {
    /// `owner/name`.
    pub repo: String,
    /// The path of the GGUF file inside the repository.
    pub file: String,
    /// A branch, tag or commit.
    pub revision: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AddError {
    #[error("`{0}` is not a Hugging Face repository: write it as owner/name, e.g. bartowski/SmolLM2-135M-Instruct-GGUF")]
    BadRepo(String),
    #[error("`{0}` is not a GGUF file of the repository: give its path there, ending in .gguf")]
    BadFile(String),
    #[error("`{0}` is not a revision: give a branch, tag or commit (letters, digits, '-', '_', '.', '/')")]
    BadRevision(String),
    #[error(
        "`{0}` cannot be a model id: use lower-case letters, digits, '-' and '.' (at most 64)"
    )]
    BadId(String),
    #[error("a model `{0}` is already listed; choose another id, or delete that one first")]
    Taken(String),
    #[error("{} already exists in the models folder; delete the model using it first", .0.display())]
    FileExists(PathBuf),
    #[error("the hub did not give {repo}/{file} at `{revision}`: {detail}")]
    Hub {
        repo: String,
        file: String,
        revision: String,
        detail: String,
    },
    #[error("{file} from {repo} was refused and not listed: {reason}")]
    Refused {
        repo: String,
        file: String,
        reason: String,
    },
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

fn plain_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 96
        && !text.starts_with(['.', '-'])
        && !text.contains("..")
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Whether `id` is a valid model id (the registry's rule).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
}

impl HubFile {
    /// Refuses what cannot be a hub repository, a GGUF path inside one or a revision, before
    /// anything is asked of the network.
    ///
    /// # Errors
    /// The first part that is malformed.
    pub fn check(&self) -> Result<(), AddError> {
        let repo_ok = self
            .repo
            .split_once('/')
            .is_some_and(|(owner, name)| plain_name(owner) && plain_name(name));
        if !repo_ok {
            return Err(AddError::BadRepo(self.repo.clone()));
        }
        let file_ok = self.file.len() <= 255
            && self.file.to_ascii_lowercase().ends_with(".gguf")
            && self.file.split('/').all(plain_name);
        if !file_ok {
            return Err(AddError::BadFile(self.file.clone()));
        }
        let revision_ok = !self.revision.is_empty()
            && self.revision.len() <= 128
            && !self.revision.contains("..")
            && !self.revision.starts_with(['/', '-', '.'])
            && self
                .revision
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
        if !revision_ok {
            return Err(AddError::BadRevision(self.revision.clone()));
        }
        Ok(())
    }

    /// The file's name in the models folder: the last part of its path in the repository.
    pub fn local_name(&self) -> &str {
        self.file.rsplit('/').next().unwrap_or(&self.file)
    }

    /// The id a model gets when none is asked for: its file name, lower-cased, without `.gguf`.
    pub fn default_id(&self) -> String {
        let name = self.local_name();
        let stem = name.get(..name.len().saturating_sub(5)).unwrap_or(name);
        let mut id = String::new();
        for c in stem.chars() {
            let c = c.to_ascii_lowercase();
            let keep = c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.';
            let next = if keep { c } else { '-' };
            if !(next == '-' && id.ends_with('-')) {
                id.push(next);
            }
        }
        let id = id.trim_matches(['-', '.']);
        id.chars()
            .take(64)
            .collect::<String>()
            .trim_end_matches(['-', '.'])
            .to_string()
    }

    fn repo(&self) -> Repo {
        Repo::with_revision(self.repo.clone(), RepoType::Model, self.revision.clone())
    }

    fn hub_error(&self, detail: String) -> AddError {
        AddError::Hub {
            repo: self.repo.clone(),
            file: self.file.clone(),
            revision: self.revision.clone(),
            detail,
        }
    }
}

/// Refuses an id that is malformed or taken, or a file name already in the models folder.
///
/// # Errors
/// See [`AddError`].
pub fn check_new(registry: &Registry, hub: &HubFile, id: &str) -> Result<(), AddError> {
    hub.check()?;
    if !valid_id(id) {
        return Err(AddError::BadId(id.to_string()));
    }
    let taken = registry.get(id).is_some()
        || registry.ner_models.iter().any(|m| m.id == id)
        || registry.ocr_models.iter().any(|m| m.id == id);
    if taken {
        return Err(AddError::Taken(id.to_string()));
    }
    let destination = registry.models_dir.join(hub.local_name());
    if destination.symlink_metadata().is_ok() {
        return Err(AddError::FileExists(destination));
    }
    Ok(())
}

/// hf-hub's progress calls, as a terminal bar or JSON lines.
struct HubProgress {
    bar: indicatif::ProgressBar,
    done: u64,
    total: u64,
    show: bool,
}

impl hf_hub::api::Progress for HubProgress {
    fn init(&mut self, size: usize, filename: &str) {
        self.total = size as u64;
        self.bar = fetch::progress_bar(self.show, Some(self.total), filename.to_string());
    }

    fn update(&mut self, size: usize) {
        self.done += size as u64;
        self.bar.inc(size as u64);
        progress::report("downloading from the hub", self.done, self.total);
    }

    fn finish(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// The reason a hub request failed, in words a person can act on.
fn hub_failure(error: &hf_hub::api::sync::ApiError) -> String {
    let raw = error.to_string();
    let hint = if raw.contains("status code 404") {
        "no such repository, file or revision (check the spelling on huggingface.co)"
    } else if raw.contains("status code 401") || raw.contains("status code 403") {
        "the repository is private or gated: accept its terms on huggingface.co and set HF_TOKEN"
    } else if raw.contains("status code") {
        "the hub answered with an error"
    } else {
        "the hub cannot be reached from here (offline?); the offline pack covers the declared models"
    };
    format!("{hint} ({raw})")
}

/// Downloads (or finds in the cache) `hub`'s file.
fn download(hub: &HubFile, show_progress: bool) -> Result<PathBuf, AddError> {
    if let Some(cached) = Cache::from_env().repo(hub.repo()).get(&hub.file) {
        return Ok(cached);
    }
    progress::report("asking the hub for the file", 0, 0);
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(false)
        .build()
        .map_err(|e| hub.hub_error(hub_failure(&e)))?;
    let watch = HubProgress {
        bar: indicatif::ProgressBar::hidden(),
        done: 0,
        total: 0,
        show: show_progress,
    };
    api.repo(hub.repo())
        .download_with_progress(&hub.file, watch)
        .map_err(|e| hub.hub_error(hub_failure(&e)))
}

/// Removes a refused file from hf-hub's cache: its snapshot link and the blob it points to.
fn forget_cached(cached: &Path) {
    if let Ok(blob) = std::fs::canonicalize(cached) {
        let _ = std::fs::remove_file(blob);
    }
    let _ = std::fs::remove_file(cached);
}

/// `1.5B`, `135M`.
fn parameters_label(parameters: u64) -> String {
    let n = parameters as f64;
    if n >= 1e9 {
        format!("{:.1}B", n / 1e9)
    } else {
        format!("{:.0}M", n / 1e6)
    }
}

/// Downloads, checks and lists `hub`'s GGUF as model `id`; returns what was listed.
///
/// # Errors
/// A malformed request, a taken id, the hub's refusal, a file the checker refuses (then removed
/// from the cache), or the user registry cannot be written.
pub fn add(
    registry: &Registry,
    hub: &HubFile,
    id: &str,
    show_progress: bool,
) -> Result<NewModel, AddError> {
    check_new(registry, hub, id)?;
    std::fs::create_dir_all(&registry.models_dir).map_err(|source| FetchError::Io {
        path: registry.models_dir.clone(),
        source,
    })?;
    let cached = download(hub, show_progress)?;
    progress::report("checking the file", 0, 0);
    let facts = match inspect::inspect(&cached) {
        Ok(facts) => facts,
        Err(e) => {
            forget_cached(&cached);
            let reason = match e {
                crate::inference::EngineError::Load { detail, .. } => detail,
                other => other.to_string(),
            };
            return Err(AddError::Refused {
                repo: hub.repo.clone(),
                file: hub.file.clone(),
                reason,
            });
        }
    };
    progress::report("checking sha256", 0, 0);
    let sha256 = fetch::sha256_file(&cached)?;
    let size = std::fs::metadata(&cached)
        .map_err(|source| FetchError::Io {
            path: cached.clone(),
            source,
        })?
        .len();
    let local_name = hub.local_name().to_string();
    let model = NewModel {
        id: id.to_string(),
        name: facts
            .name
            .clone()
            .map_or_else(|| local_name.clone(), |n| format!("{n} · {}", facts.quantization)),
        family: facts
            .basename
            .clone()
            .unwrap_or_else(|| facts.architecture.clone()),
        parameters: parameters_label(facts.parameters),
        quantization: facts.quantization.clone(),
        bits_per_weight: facts.bits_per_weight(),
        context_length: facts.context_length.max(1),
        engine: EngineKind::LlamaCpp,
        instruct: facts.chat_template,
        license: facts
            .license
            .clone()
            .unwrap_or_else(|| "not stated in the file; see the model card on the hub".into()),
        description: format!(
            "Added from the Hugging Face hub: {}/{} at `{}` (architecture {}).",
            hub.repo, hub.file, hub.revision, facts.architecture
        ),
        provenance_note: (!facts.chat_template).then(|| {
            "A base model: the file has no chat template, so chat formats the conversation as plain text.".to_string()
        }),
        file: local_name.clone(),
        sha256,
        size,
        hub: Some(WrittenHub {
            repo: hub.repo.clone(),
            file: hub.file.clone(),
            revision: hub.revision.clone(),
        }),
    };
    let destination = registry.models_dir.join(&local_name);
    fetch::link_into(&cached, &destination)?;
    progress::report("listing the model", 0, 0);
    if let Err(e) = derived::add(&registry.models_dir, &model) {
        let _ = std::fs::remove_file(&destination);
        return Err(e.into());
    }
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(repo: &str, file: &str) -> HubFile {
        HubFile {
            repo: repo.into(),
            file: file.into(),
            revision: "main".into(),
        }
    }

    #[test]
    fn requests_are_checked_before_the_network() {
        assert!(hub(
            "bartowski/SmolLM2-135M-Instruct-GGUF",
            "SmolLM2-135M-Instruct-Q8_0.gguf"
        )
        .check()
        .is_ok());
        assert!(hub("owner/name", "sub/dir/model.Q4_K_M.GGUF")
            .check()
            .is_ok());
        for repo in [
            "",
            "noslash",
            "a/b/c",
            "../x",
            "a/..",
            "own er/name",
            "a/-b",
        ] {
            assert!(
                matches!(hub(repo, "m.gguf").check(), Err(AddError::BadRepo(_))),
                "{repo}"
            );
        }
        for file in [
            "",
            "model.bin",
            "../m.gguf",
            "a//m.gguf",
            "/m.gguf",
            ".gguf",
            "a/../m.gguf",
        ] {
            assert!(
                matches!(hub("a/b", file).check(), Err(AddError::BadFile(_))),
                "{file}"
            );
        }
        let mut bad_revision = hub("a/b", "m.gguf");
        bad_revision.revision = "../main".into();
        assert!(matches!(
            bad_revision.check(),
            Err(AddError::BadRevision(_))
        ));
    }

    #[test]
    fn the_default_id_is_the_file_name_made_valid() {
        let file = hub("a/b", "quant/SmolLM2-135M-Instruct-Q8_0.gguf");
        assert_eq!(file.local_name(), "SmolLM2-135M-Instruct-Q8_0.gguf");
        assert_eq!(file.default_id(), "smollm2-135m-instruct-q8-0");
        assert!(valid_id(&file.default_id()));
        assert_eq!(hub("a/b", "A__B .gguf").default_id(), "a-b");
    }

    #[test]
    fn parameter_counts_read_as_people_write_them() {
        assert_eq!(parameters_label(134_515_008), "135M");
        assert_eq!(parameters_label(1_543_714_304), "1.5B");
    }
}
