//! Keeping a long-running btic's resident memory small under glibc.
//!
//! glibc's malloc gives a thread that finds the arenas busy an arena of its own, up to
//! eight per core, and each arena keeps what its threads freed. The daemon runs many
//! short blocking tasks (sled, SQLite, file writes) on a pool of threads, so its freed
//! parse chunks and batches end up spread over many arenas: with a 10 000-session
//! backlog that was about 60 of its 140 MiB (`benches/README.md`, backlog). Two arenas,
//! one per core of the machines it is sized for, cost no measurable throughput.
//!
//! glibc serves a block of 128 KiB or more with a mapping of its own and unmaps it when
//! it is freed; but when it frees one it raises that threshold to the block's size (up
//! to 32 MiB), and from then on sled's 512 KiB log buffers, parse chunks and batch
//! vectors come out of the arenas, where they stay resident after they are freed until
//! the next trim. Setting `MALLOC_MMAP_THRESHOLD_` fixes the threshold at 128 KiB and
//! turns that adjustment off: a million queued sessions peaked at 66.7 / 75.6 MiB
//! building / draining against 75.3 / 79.2 without it (`benches/README.md`, backlog).
//!
//! glibc reads these variables once, before `main`, so they are set by executing the
//! same program again with them set (same process id, same arguments). A variable the
//! operator set, to any value, is left as it is, and a program that cannot be found
//! again runs with glibc's defaults.

/// What the daemon asks glibc for: two arenas, and blocks of 128 KiB or more mapped on
/// their own and unmapped when freed.
const TUNING: [(&str, &str); 2] = [
    ("MALLOC_ARENA_MAX", "2"),
    ("MALLOC_MMAP_THRESHOLD_", "131072"),
];

/// The variables of [`TUNING`] that `get` (the environment) does not have, with the
/// values to set them to.
fn missing<V>(get: impl Fn(&str) -> Option<V>) -> Vec<(&'static str, &'static str)> {
    TUNING
        .into_iter()
        .filter(|(variable, _)| get(variable).is_none())
        .collect()
}

/// Replaces this process by itself with the variables of [`TUNING`] that are not set
/// yet. Returns only when nothing was replaced.
pub fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;

        let missing = missing(|variable| std::env::var_os(variable));
        if missing.is_empty() {
            return;
        }
        let Ok(program) = std::env::current_exe() else {
            return;
        };
        let mut args = std::env::args_os();
        let mut command = std::process::Command::new(program);
        if let Some(name) = args.next() {
            command.arg0(name);
        }
        // `exec` returns only if it failed; the process then goes on as it is.
        let _failed = command.args(args).envs(missing).exec();
    }
}

/// The variable that sets the seconds between trims; `0` turns trimming off.
const TRIM_VARIABLE: &str = "BTIC_MALLOC_TRIM_SECONDS";
/// Seconds between trims unless [`TRIM_VARIABLE`] says otherwise.
const TRIM_SECONDS: u64 = 5;

/// Starts a thread that hands the pages malloc holds free back to the kernel every
/// `BTIC_MALLOC_TRIM_SECONDS` (default 5; `0` turns it off) with `malloc_trim`. glibc
/// returns only the free memory at the top of its heap by itself; a deliver batch's
/// hundreds of decoded sessions, freed between longer-lived allocations of the queue's
/// cache, otherwise stayed resident (`benches/README.md`, backlog).
// The one call into C: glibc's `malloc_trim` has no safe binding.
#[allow(unsafe_code)]
pub fn trim_freed_memory() {
    let seconds = match std::env::var(TRIM_VARIABLE) {
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(n) => n,
            Err(_) => {
                tracing::warn!(
                    "{TRIM_VARIABLE}={v:?} is not a number of seconds; using {TRIM_SECONDS}"
                );
                TRIM_SECONDS
            }
        },
        Err(_) => TRIM_SECONDS,
    };
    if seconds == 0 {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let every = std::time::Duration::from_secs(seconds);
        let spawned = std::thread::Builder::new()
            .name("malloc-trim".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(every);
                    // SAFETY: malloc_trim only walks malloc's own free lists, under
                    // malloc's locks; it has no preconditions.
                    unsafe {
                        libc::malloc_trim(0);
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::debug!("not trimming freed memory: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_variables_not_set_are_asked_for() {
        assert_eq!(missing(|_| None::<String>), TUNING.to_vec());
        let operator_set = |v: &str| (v == "MALLOC_ARENA_MAX").then(|| "8".to_owned());
        assert_eq!(
            missing(operator_set),
            vec![("MALLOC_MMAP_THRESHOLD_", "131072")]
        );
        assert!(missing(|_| Some(String::new())).is_empty());
    }
}
