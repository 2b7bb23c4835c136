//! `quantlab models verify`: hashes a model's files on disk and compares them with the sha256
//! its registry entry declares (the published one, or the one recorded when it was made or
//! added here). A file that no longer matches was damaged or replaced since it was checked.

use std::{
    fs::File,
    io::Read,
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};

use super::{progress, FileStatus, Registry};

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("unknown model `{0}`; `quantlab models list` shows the ids")]
    Unknown(String),
    #[error("`{0}` runs on a remote server: there are no files here to verify")]
    Remote(String),
    #[error(
        "`{0}` is not downloaded (or incomplete): there is nothing whole to verify; download it"
    )]
    NotDownloaded(String),
    #[error("{file} is damaged or was replaced: its sha256 is {actual}, but {expected} was published; delete the model and download it again")]
    Mismatch {
        file: String,
        expected: String,
        actual: String,
    },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One file to hash, with the checksum it should have when one is known.
pub struct Expected {
    pub path: PathBuf,
    pub sha256: Option<String>,
}

/// The files of model `id` (a chat, NER or OCR model) and their declared checksums.
///
/// # Errors
/// Unknown, remote, or not (wholly) on disk.
pub fn expected_files(registry: &Registry, id: &str) -> Result<Vec<Expected>, VerifyError> {
    if let Some(entry) = registry.get(id) {
        if entry.remote.is_some() {
            return Err(VerifyError::Remote(id.to_string()));
        }
        let FileStatus::Present { path, .. } = registry.file_status(entry) else {
            return Err(VerifyError::NotDownloaded(id.to_string()));
        };
        if path.is_dir() {
            // A checkpoint folder: its files have no declared checksums, but hashing them
            // still proves they read back whole.
            let names = entry
                .hub
                .as_ref()
                .map(|h| h.files.clone())
                .unwrap_or_default();
            return Ok(names
                .iter()
                .map(|name| Expected {
                    path: path.join(name),
                    sha256: None,
                })
                .collect());
        }
        return Ok(vec![Expected {
            path,
            sha256: entry.sha256.clone(),
        }]);
    }
    let (folder, unavailable, declared) = if let Some(entry) = registry.ner(id) {
        let declared = folder_checksums(entry.wheel.as_ref(), &[]);
        let names = entry.files().iter().map(|n| n.to_string()).collect();
        (
            registry.ner_dir(entry),
            registry.ner_unavailability(entry),
            (names, declared),
        )
    } else if let Some(entry) = registry.ocr(id) {
        let urls: Vec<(String, Option<String>)> = entry
            .urls
            .iter()
            .map(|u| (u.name.clone(), u.sha256.clone()))
            .collect();
        let declared = folder_checksums(entry.wheel.as_ref(), &urls);
        let names = entry.files(&registry.ocr_dir(entry));
        (
            registry.ocr_dir(entry),
            registry.ocr_unavailability(entry),
            (names, declared),
        )
    } else {
        return Err(VerifyError::Unknown(id.to_string()));
    };
    if unavailable.is_some() {
        return Err(VerifyError::NotDownloaded(id.to_string()));
    }
    let (names, declared) = declared;
    Ok(names
        .into_iter()
        .map(|name| Expected {
            sha256: declared
                .iter()
                .find(|(n, _)| *n == name)
                .and_then(|(_, sha)| sha.clone()),
            path: folder.join(name),
        })
        .collect())
}

fn folder_checksums(
    wheel: Option<&super::folders::FolderWheel>,
    urls: &[(String, Option<String>)],
) -> Vec<(String, Option<String>)> {
    let mut declared: Vec<(String, Option<String>)> = wheel
        .map(|w| {
            w.files
                .iter()
                .map(|f| (f.name.clone(), Some(f.sha256.clone())))
                .collect()
        })
        .unwrap_or_default();
    for (name, sha) in urls {
        if !declared.iter().any(|(n, s)| n == name && s.is_some()) {
            declared.push((name.clone(), sha.clone()));
        }
    }
    declared
}

/// Hashes every file (progress in bytes over all of them) and compares each with its checksum.
/// Returns a sentence for people saying what was proven.
///
/// # Errors
/// The first file whose sha256 differs, or one that cannot be read.
pub fn verify(files: &[Expected]) -> Result<String, VerifyError> {
    let total: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(&f.path).ok())
        .map(|m| m.len())
        .sum();
    let mut done = 0u64;
    let mut unpublished = Vec::new();
    for file in files {
        let actual = hash(&file.path, &mut |n| {
            done += n;
            progress::report("checking sha256", done, total);
        })?;
        let name = file
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match &file.sha256 {
            Some(expected) if !expected.eq_ignore_ascii_case(&actual) => {
                return Err(VerifyError::Mismatch {
                    file: name,
                    expected: expected.clone(),
                    actual,
                })
            }
            Some(_) => {}
            None => unpublished.push(format!("{name} {actual}")),
        }
    }
    let checked = files.len() - unpublished.len();
    let mut message = match checked {
        0 => String::new(),
        1 => "The sha256 matches the published checksum.".to_string(),
        n => format!("All {n} files match their published sha256."),
    };
    if !unpublished.is_empty() {
        if !message.is_empty() {
            message.push(' ');
        }
        message.push_str(&format!(
            "No checksum was published for {} (read whole; sha256: {}).",
            if unpublished.len() == 1 {
                "this file"
            } else {
                "these files"
            },
            unpublished.join(", ")
        ));
    }
    Ok(message)
}

fn hash(path: &Path, advanced: &mut dyn FnMut(u64)) -> Result<String, VerifyError> {
    let io = |source| VerifyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer).map_err(io)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        advanced(read as u64);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_byte_is_found_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        std::fs::write(&path, b"weights").unwrap();
        let good = hex::encode(Sha256::digest(b"weights"));
        let files = [Expected {
            path: path.clone(),
            sha256: Some(good.clone()),
        }];
        assert_eq!(
            verify(&files).unwrap(),
            "The sha256 matches the published checksum."
        );
        std::fs::write(&path, b"weighty").unwrap();
        match verify(&files) {
            Err(VerifyError::Mismatch { file, expected, .. }) => {
                assert_eq!(file, "m.gguf");
                assert_eq!(expected, good);
            }
            other => panic!("expected a mismatch, got {other:?}"),
        }
        let unpublished = [Expected { path, sha256: None }];
        assert!(verify(&unpublished)
            .unwrap()
            .contains("No checksum was published"));
    }
}
