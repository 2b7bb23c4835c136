//! What downloads and quantizations that were killed mid-way (a crash, a power cut) left in the
//! models folder: `.fetch-<id>-*` work folders, `.<file>.*.partial` and `.<file>.link`
//! temporaries, `<file>.partial` quantizations. They are never listed, only wasted space; `serve`
//! removes them at start-up. Every job holds a shared lock (flock) on the models folder itself
//! while it works, and the sweep runs only when it can take that lock exclusively, so a
//! `quantlab models fetch` running in a terminal meanwhile keeps its files.

use std::{
    fs::File,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

/// A held lock on a models folder's jobs; released when dropped (or when the process dies).
pub struct WorkLock {
    _file: File,
}

fn lock(models_dir: &Path, operation: i32) -> Option<WorkLock> {
    std::fs::create_dir_all(models_dir).ok()?;
    // The folder itself is locked: no lock file to list, nothing left behind.
    let file = File::open(models_dir).ok()?;
    // SAFETY: plain syscall on a descriptor we own for the call's duration.
    let taken = unsafe { libc::flock(file.as_raw_fd(), operation | libc::LOCK_NB) } == 0;
    taken.then_some(WorkLock { _file: file })
}

impl WorkLock {
    /// Marks a job at work in `models_dir`. Shared: jobs do not exclude each other. `None` when
    /// the folder cannot be opened (then the job fails on its own anyway).
    pub fn working(models_dir: &Path) -> Option<Self> {
        // A sweep holds the lock only for a moment: wait for it rather than race it.
        for _ in 0..50 {
            if let Some(lock) = lock(models_dir, libc::LOCK_SH) {
                return Some(lock);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        None
    }
}

/// Whether `name` is a temporary a job writes in the models folder (or in a model's folder).
fn is_leftover(name: &str, is_dir: bool) -> bool {
    if is_dir {
        return name.starts_with(".fetch-");
    }
    name.ends_with(".partial") || (name.starts_with('.') && name.ends_with(".link"))
}

/// Removes what killed jobs left in `models_dir` and its model folders, unless a job is at work
/// there now; returns what was removed.
pub fn sweep(models_dir: &Path) -> Vec<PathBuf> {
    let Some(_exclusive) = lock(models_dir, libc::LOCK_EX) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for folder in sweep_dir(models_dir, true, &mut removed) {
        sweep_dir(&folder, false, &mut removed);
    }
    removed
}

/// Removes the leftovers directly in `dir`; returns its sub-folders when `top`.
fn sweep_dir(dir: &Path, top: bool, removed: &mut Vec<PathBuf>) -> Vec<PathBuf> {
    let mut folders = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return folders;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        // Not following links: a model linked from hf-hub's cache is not ours to sweep.
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if is_leftover(&name, kind.is_dir()) {
            let gone = if kind.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            if gone.is_ok() {
                removed.push(path);
            }
        } else if kind.is_dir() && top {
            folders.push(path);
        }
    }
    folders
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_temporaries_go_and_never_while_a_job_works() {
        let dir = tempfile::tempdir().unwrap();
        let models = dir.path();
        let keep = ["model.gguf", "quantized.toml", "rampart/model.onnx"];
        let leftovers = [
            ".fetch-smollm-abc/wheel.whl",
            ".model.gguf.x1.partial",
            ".model.gguf.link",
            "model.Q8_0.gguf.partial",
            "rampart/.model.onnx.y2.partial",
        ];
        for name in keep.iter().chain(&leftovers) {
            let path = models.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"x").unwrap();
        }
        // A job at work: nothing is swept.
        let working = WorkLock::working(models).expect("lock");
        assert!(sweep(models).is_empty());
        assert!(models.join(".model.gguf.link").exists());
        drop(working);
        let removed = sweep(models);
        assert_eq!(removed.len(), leftovers.len(), "{removed:?}");
        for name in keep {
            assert!(models.join(name).exists(), "{name} kept");
        }
        for name in leftovers {
            assert!(!models.join(name).exists(), "{name} removed");
        }
    }
}
