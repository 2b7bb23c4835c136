//! Resident memory of this process, read from the kernel (Linux `/proc`), never estimated.

/// Resident set size in bytes, or `None` where `/proc/self/status` is unavailable.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_status_kib(&status, "VmRSS:")
}

/// The highest resident set size since the process started or since `reset_peak`.
pub fn peak_resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_status_kib(&status, "VmHWM:")
}

/// Resets the kernel's high-water mark to the current resident size (Linux ≥ 4.0), so the peak
/// of one benchmark step can be read alone. `false` when the kernel refused.
pub fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Resident and peak sizes belong to the whole process, and the test harness runs other tests
    /// on other threads that allocate and free tens of MiB. So each check re-runs this test binary
    /// with only itself selected, where nothing else moves the numbers.
    const ALONE: &str = "QUANTLAB_MEMORY_TEST_ALONE";

    /// `true` in the child, where the caller goes on with the check; in the parent it runs the
    /// child, asserts that it passed, and returns `false`.
    fn run_alone(test: &str) -> bool {
        if std::env::var_os(ALONE).is_some() {
            return true;
        }
        let module = module_path!().split_once("::").map_or("", |(_, rest)| rest);
        let name = format!("{module}::{test}");
        let exe = std::env::current_exe().expect("the test binary knows its path");
        let output = Command::new(exe)
            .args(["--exact", &name, "--test-threads", "1", "--nocapture"])
            .env(ALONE, "1")
            .output()
            .expect("the test binary runs again");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("1 passed"),
            "{name} alone: {}\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        false
    }

    #[test]
    fn parses_vm_rss_and_grows_when_memory_is_touched() {
        assert_eq!(
            parse_status_kib("Name: x\nVmRSS:\t  1234 kB\n", "VmRSS:"),
            Some(1234 * 1024)
        );
        if !run_alone("parses_vm_rss_and_grows_when_memory_is_touched") {
            return;
        }
        let before = resident_bytes().unwrap();
        let block = std::hint::black_box(vec![1u8; 64 << 20]);
        let after = resident_bytes().unwrap();
        assert!(after >= before + (32 << 20), "{before} -> {after}");
        drop(block);
    }

    #[test]
    fn peak_can_be_reset_and_then_records_a_new_high() {
        if !run_alone("peak_can_be_reset_and_then_records_a_new_high") || !reset_peak() {
            return; // a kernel without clear_refs: the bench reports no peak there
        }
        let base = peak_resident_bytes().unwrap();
        let block = std::hint::black_box(vec![1u8; 64 << 20]);
        drop(block);
        let peak = peak_resident_bytes().unwrap();
        assert!(peak >= base + (32 << 20), "{base} -> {peak}");
        assert!(reset_peak());
        assert!(peak_resident_bytes().unwrap() < peak);
    }
}
