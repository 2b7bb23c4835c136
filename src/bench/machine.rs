//! Facts about the machine a bench ran on, read from the kernel and from how we were compiled.

use super::types::MachineInfo;

/// CPU flags (as `/proc/cpuinfo` spells them) that decide which kernels llama.cpp and candle use.
const SIMD_FLAGS: &[&str] = &[
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx_vnni",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "asimd",
    "sve",
];

pub fn machine_info(threads: u32) -> MachineInfo {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    MachineInfo {
        cpu: cpu_model(&cpuinfo).unwrap_or_else(|| std::env::consts::ARCH.to_string()),
        logical_cores: std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
        cpu_simd: cpu_simd(&cpuinfo),
        build_simd: build_simd(),
        threads,
        memory_bytes: mem_total(&meminfo),
        os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
        quantlab_version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("model name") || l.starts_with("Model"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

fn cpu_simd(cpuinfo: &str) -> Vec<String> {
    let flags: std::collections::HashSet<&str> = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags") || l.starts_with("Features"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.split_whitespace().collect())
        .unwrap_or_default();
    SIMD_FLAGS
        .iter()
        .filter(|f| flags.contains(*f))
        .map(|f| f.to_string())
        .collect()
}

fn build_simd() -> Vec<String> {
    let compiled = [
        ("sse4_2", cfg!(target_feature = "sse4.2")),
        ("avx", cfg!(target_feature = "avx")),
        ("avx2", cfg!(target_feature = "avx2")),
        ("fma", cfg!(target_feature = "fma")),
        ("f16c", cfg!(target_feature = "f16c")),
        ("avx512f", cfg!(target_feature = "avx512f")),
        ("neon", cfg!(target_feature = "neon")),
    ];
    compiled
        .iter()
        .filter(|(_, on)| *on)
        .map(|(name, _)| name.to_string())
        .collect()
}

fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_model_and_only_the_simd_flags_that_matter() {
        let cpuinfo = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse4_2 avx avx2 fma f16c lm\n";
        assert_eq!(cpu_model(cpuinfo).as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(cpu_simd(cpuinfo), ["sse4_2", "avx", "avx2", "fma", "f16c"]);
        assert_eq!(mem_total("MemTotal:  1024 kB\n"), Some(1 << 20));
    }

    #[test]
    fn this_machine_reports_cores_and_what_we_compiled_for() {
        let info = machine_info(2);
        assert!(info.logical_cores >= 1);
        assert_eq!(info.threads, 2);
        #[cfg(target_arch = "x86_64")]
        assert!(
            info.build_simd.iter().any(|f| f == "avx2"),
            "built for x86-64-v3"
        );
    }
}
