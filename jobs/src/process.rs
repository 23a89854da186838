//! Process start-up shared by the Lucid binaries: the allocator settings,
//! then the Tokio runtime.

use std::future::Future;

/// Runs `main` on a multi-threaded Tokio runtime, after [`tune_allocator`].
/// The `main` of `lucid-api`, `lucid-worker` and `lucid-scheduler`.
pub fn run<T>(main: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    use anyhow::Context as _;
    tune_allocator();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the Tokio runtime")?
        .block_on(main)
}

/// glibc's allocator settings for a long-running service, applied before
/// any thread starts: at most 2 arenas, and a fixed 128 KiB threshold above
/// which blocks are mapped on their own and returned on free, with the heap
/// trimmed above 128 KiB of free memory.
///
/// glibc's default raises the mapping threshold to the largest block freed
/// so far (up to 32 MiB) and gives each thread its own arena, so after a
/// large batch body had been parsed on a few threads those arenas kept the
/// memory: the API's peak RSS grew by about 3 MiB with each 20,000-item
/// batch (`bench scaling`: 41.5 → 46.7 → 47.0 MiB over three batches,
/// 39.2 MiB flat with these settings). The same values can be given as
/// `GLIBC_TUNABLES=glibc.malloc.arena_max=2:...`: when that variable sets
/// any `glibc.malloc.` tunable, the operator's settings win and none of
/// these is applied. No effect on other C libraries.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if !operator_tuned(std::env::var("GLIBC_TUNABLES").ok().as_deref()) {
        glibc_mallopt();
    }
}

/// Whether `GLIBC_TUNABLES` already sets the allocator.
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
fn operator_tuned(tunables: Option<&str>) -> bool {
    tunables.is_some_and(|t| t.contains("glibc.malloc."))
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn glibc_mallopt() {
    const THRESHOLD: libc::c_int = 128 * 1024;
    for (param, value) in [
        (libc::M_ARENA_MAX, 2),
        (libc::M_MMAP_THRESHOLD, THRESHOLD),
        (libc::M_TRIM_THRESHOLD, THRESHOLD),
    ] {
        // SAFETY: mallopt only changes allocator parameters; it takes no
        // pointers and is called before this process starts any thread.
        unsafe {
            libc::mallopt(param, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::operator_tuned;

    #[test]
    fn glibc_tunables_for_malloc_take_precedence_over_the_built_in_settings() {
        assert!(!operator_tuned(None));
        assert!(!operator_tuned(Some("glibc.pthread.rseq=0")));
        assert!(operator_tuned(Some("glibc.malloc.arena_max=8")));
        assert!(operator_tuned(Some(
            "glibc.pthread.rseq=0:glibc.malloc.mmap_threshold=65536"
        )));
    }
}
