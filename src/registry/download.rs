//! Plain HTTPS downloads, for model files published neither on the hub nor on PyPI (ocrs's
//! networks): streamed to a temporary file beside the destination with a progress bar, checked
//! against a sha256 when one is declared, and renamed into place only when complete.

use std::{io::Write, path::Path};

use sha2::{Digest, Sha256};

use super::fetch::{progress_bar, FetchError};

pub fn download(
    url: &str,
    destination: &Path,
    sha256: Option<&str>,
    show_progress: bool,
) -> Result<(), FetchError> {
    let dir = destination.parent().unwrap_or(Path::new("."));
    let io = |source: std::io::Error| FetchError::Io {
        path: destination.to_path_buf(),
        source,
    };
    let http = |detail: String| FetchError::Http {
        url: url.to_string(),
        detail,
    };
    let mut temp = tempfile::Builder::new()
        .prefix(".download.")
        .suffix(".partial")
        .tempfile_in(dir)
        .map_err(io)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io)?;
    let digest = runtime.block_on(async {
        let mut response = reqwest::get(url)
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| http(e.to_string()))?;
        let bar = progress_bar(
            show_progress,
            response.content_length(),
            url.rsplit('/').next().unwrap_or(url).to_string(),
        );
        let mut hasher = Sha256::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| http(e.to_string()))? {
            hasher.update(&chunk);
            temp.write_all(&chunk).map_err(io)?;
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        Ok::<_, FetchError>(hex::encode(hasher.finalize()))
    })?;
    if let Some(expected) = sha256 {
        if !digest.eq_ignore_ascii_case(expected) {
            return Err(FetchError::Checksum {
                file: destination.display().to_string(),
                expected: expected.to_string(),
                actual: digest,
            });
        }
    }
    temp.as_file().sync_all().map_err(io)?;
    temp.persist(destination).map_err(|e| io(e.error))?;
    Ok(())
}
