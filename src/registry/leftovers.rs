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
    let mut removed = remove_matching(models_dir, is_leftover);
    let folders: Vec<PathBuf> = std::fs::read_dir(models_dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|kind| kind.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    for folder in folders {
        removed.extend(remove_matching(&folder, is_leftover));
    }
    removed
}

/// Removes the entries of `dir` whose name and kind (`true` for a folder) `matches` picks, and
/// returns them. Links are not followed: a link is removed as a file, never what it points to
/// (a model linked from hf-hub's cache is not ours to remove).
pub fn remove_matching(dir: &Path, matches: impl Fn(&str, bool) -> bool) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let name = entry.file_name().to_string_lossy().into_owned();
        if !matches(&name, kind.is_dir()) {
            continue;
        }
        let path = entry.path();
        let gone = if kind.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        if gone.is_ok() {
            removed.push(path);
        }
    }
    removed
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
