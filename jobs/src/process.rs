//! Process start-up shared by the Lucid binaries: the allocator settings,
//! then the Tokio runtime.

use std::future::Future;

/// Runs `main` on a multi-threaded Tokio runtime, after setting glibc's
/// allocator while no other thread exists yet (`tune_allocator`). The
/// `main` of `lucid-api`, `lucid-worker`, `lucid-scheduler` and the bench.
pub fn run<T>(main: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    use anyhow::Context as _;
    tune_allocator();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the Tokio runtime")?
        .block_on(main)
}

/// glibc's allocator settings for a long-running service: one arena per
/// core (at least 2; glibc's default allows 8 per core), and a fixed 128 KiB
/// threshold above which blocks are mapped on their own and returned on
/// free, with the heap trimmed above 128 KiB of free memory.
///
/// glibc's default raises the mapping threshold to the largest block freed
/// so far (up to 32 MiB) and gives threads more arenas, so after a large
/// batch body had been parsed on a few threads those arenas kept the memory:
/// the API's peak RSS grew by about 3 MiB with each 20,000-item batch
/// (`bench scaling`: 41.5, 46.7, 47.0 MiB after three batches; 37.3, 40.3,
/// 40.3 MiB with these settings; see BENCHMARKS.md).
///
/// An operator's own settings win: when `GLIBC_TUNABLES` sets a
/// `glibc.malloc.` tunable, or `MALLOC_ARENA_MAX`, `MALLOC_MMAP_THRESHOLD_`
/// or `MALLOC_TRIM_THRESHOLD_` is set, none of these is applied. No effect
/// on other C libraries.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if !operator_tuned(|name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())) {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        glibc_mallopt(cores.max(2));
    }
}

/// Whether the environment (read through `var`) already sets the allocator.
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
fn operator_tuned(var: impl Fn(&str) -> Option<String>) -> bool {
    var("GLIBC_TUNABLES").is_some_and(|t| t.contains("glibc.malloc."))
        || [
            "MALLOC_ARENA_MAX",
            "MALLOC_MMAP_THRESHOLD_",
            "MALLOC_TRIM_THRESHOLD_",
        ]
        .iter()
        .any(|name| var(name).is_some())
}

/// Must run before any other thread starts (only [`run`] calls it).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn glibc_mallopt(arenas: usize) {
    const THRESHOLD: libc::c_int = 128 * 1024;
    let arenas = libc::c_int::try_from(arenas).unwrap_or(libc::c_int::MAX);
    for (param, value) in [
        (libc::M_ARENA_MAX, arenas),
        (libc::M_MMAP_THRESHOLD, THRESHOLD),
        (libc::M_TRIM_THRESHOLD, THRESHOLD),
    ] {
        // SAFETY: mallopt only changes allocator parameters, takes no
        // pointers, and runs before this process starts any other thread.
        // It returns 0 when glibc refuses a value, which then keeps its
        // default: nothing to undo, and no logger exists yet to tell.
        unsafe {
            libc::mallopt(param, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::operator_tuned;

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_string())
        }
    }

    #[test]
    fn an_operators_malloc_settings_take_precedence_over_the_built_in_ones() {
        assert!(!operator_tuned(env(&[])));
        assert!(!operator_tuned(env(&[(
            "GLIBC_TUNABLES",
            "glibc.pthread.rseq=0"
        )])));
        assert!(operator_tuned(env(&[(
            "GLIBC_TUNABLES",
            "glibc.malloc.arena_max=8"
        )])));
        assert!(operator_tuned(env(&[(
            "GLIBC_TUNABLES",
            "glibc.pthread.rseq=0:glibc.malloc.mmap_threshold=65536"
        )])));
        assert!(operator_tuned(env(&[("MALLOC_ARENA_MAX", "4")])));
        assert!(operator_tuned(env(&[("MALLOC_TRIM_THRESHOLD_", "0")])));
    }

    /// `unsafe_code` is `deny` in the workspace, not `forbid`, for the one
    /// `mallopt` call above: no other file may allow it.
    #[test]
    fn only_the_allocator_settings_allow_unsafe_code() {
        let needle = concat!("allow(", "unsafe_code)");
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut found = Vec::new();
        let mut dirs: Vec<std::path::PathBuf> =
            ["api", "jobs", "workers", "scheduler", "cli", "tests"]
                .iter()
                .map(|d| root.join(d))
                .collect();
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).expect("read dir").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    if !path.ends_with("target") && !path.ends_with("node_modules") {
                        dirs.push(path);
                    }
                } else if path.extension().is_some_and(|e| e == "rs")
                    && std::fs::read_to_string(&path).is_ok_and(|t| t.contains(needle))
                {
                    found.push(path.strip_prefix(&root).expect("under root").to_path_buf());
                }
            }
        }
        assert_eq!(found, [std::path::PathBuf::from("jobs/src/process.rs")]);
    }
}
