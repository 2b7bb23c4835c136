//! Resident memory of this process, read from the kernel (Linux `/proc`), never estimated.

/// Resident set size in bytes, or `None` where `/proc/self/status` is unavailable.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vm_rss_and_grows_when_memory_is_touched() {
        assert_eq!(
            parse_vm_rss("Name: x\nVmRSS:\t  1234 kB\n"),
            Some(1234 * 1024)
        );
        let before = resident_bytes().unwrap();
        let block = std::hint::black_box(vec![1u8; 64 << 20]);
        let after = resident_bytes().unwrap();
        assert!(after >= before + (32 << 20), "{before} -> {after}");
        drop(block);
    }
}
