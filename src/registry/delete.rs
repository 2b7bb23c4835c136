//! Deleting a model's weights from the models folder. Only what the registry names inside that
//! folder is ever removed: a file or checkpoint folder, or the link a hub download left there
//! (hf-hub's cache is not touched). A model made here also leaves `quantized.toml`.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{derived, ModelEntry, Registry, RegistryError};

#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    #[error("`{0}` runs on a remote server: there are no files here to delete")]
    Remote(String),
    #[error("`{id}` is read from {path}, outside the models folder; Quantlab only deletes files in its models folder")]
    OutsideModelsFolder { id: String, path: String },
    #[error("`{0}` has no files in the models folder")]
    NothingThere(String),
    #[error("cannot delete {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// What a deletion removed.
#[derive(Clone, Debug, Serialize)]
pub struct Deleted {
    pub id: String,
    /// The path removed, inside the models folder.
    pub path: PathBuf,
    pub freed_bytes: u64,
    /// The model itself left the list (it was made here).
    pub unlisted: bool,
    /// Other models that ran the same weights and are now not downloaded either.
    pub also_affected: Vec<String>,
}

/// The path to remove for `entry`, after checking it lies directly in the models folder.
fn target(registry: &Registry, entry: &ModelEntry) -> Result<PathBuf, DeleteError> {
    if entry.remote.is_some() {
        return Err(DeleteError::Remote(entry.id.clone()));
    }
    let path = registry.file_path(entry);
    let inside = entry.path.is_none()
        && !entry.file.is_empty()
        && Path::new(&entry.file).components().count() == 1
        && !entry.file.starts_with('.');
    if !inside {
        return Err(DeleteError::OutsideModelsFolder {
            id: entry.id.clone(),
            path: path.display().to_string(),
        });
    }
    Ok(path)
}

/// Removes `entry`'s weights (and its listing when it was made here).
///
/// # Errors
/// A remote model, a path outside the models folder, nothing there to delete, or I/O.
pub fn delete_files(registry: &Registry, entry: &ModelEntry) -> Result<Deleted, DeleteError> {
    let path = target(registry, entry)?;
    let io = |source| DeleteError::Io {
        path: path.display().to_string(),
        source,
    };
    // `symlink_metadata`: a hub download is a link into hf-hub's cache; the link goes, the
    // cache stays.
    let freed_bytes = match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            std::fs::remove_file(&path).map_err(io)?;
            size
        }
        Ok(meta) if meta.is_dir() => {
            let size = folder_bytes(&path);
            std::fs::remove_dir_all(&path).map_err(io)?;
            size
        }
        Ok(meta) => {
            std::fs::remove_file(&path).map_err(io)?;
            meta.len()
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !entry.made_here {
                return Err(DeleteError::NothingThere(entry.id.clone()));
            }
            0
        }
        Err(source) => return Err(io(source)),
    };
    let unlisted = entry.made_here && derived::remove(&registry.models_dir, &entry.id)?;
    let also_affected = registry
        .models
        .iter()
        .filter(|m| m.id != entry.id && m.remote.is_none() && registry.file_path(m) == path)
        .map(|m| m.id.clone())
        .collect();
    Ok(Deleted {
        id: entry.id.clone(),
        path,
        freed_bytes,
        unlisted,
        also_affected,
    })
}

fn folder_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| if m.is_file() { m.len() } else { 0 })
                .sum()
        })
        .unwrap_or(0)
}
