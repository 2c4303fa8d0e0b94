//! Keeping a long-running btic's resident memory small under glibc.
//!
//! glibc's malloc gives a thread that finds the arenas busy an arena of its own, up to
//! eight per core, and each arena keeps what its threads freed. The daemon runs many
//! short blocking tasks (sled, SQLite, file writes) on a pool of threads, so its freed
//! parse chunks and batches end up spread over many arenas: with a 10 000-session
//! backlog that was about 60 of its 140 MiB (`benches/README.md`, backlog). Two arenas,
//! one per core of the machines it is sized for, cost no measurable throughput.
//!
//! glibc reads `MALLOC_ARENA_MAX` once, before `main`, so the limit is set by executing
//! the same program again with the variable set (same process id, same arguments). An
//! operator who sets the variable, to any value, is left alone, and so is a program
//! that cannot be found again: it then runs with glibc's default.

/// The variable glibc reads.
const VARIABLE: &str = "MALLOC_ARENA_MAX";
/// The arenas the daemon asks for.
const ARENAS: &str = "2";

/// Replaces this process by itself with `MALLOC_ARENA_MAX=2` unless the variable is set
/// already. Returns only when nothing was replaced.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;

        if std::env::var_os(VARIABLE).is_some() {
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
        let _failed = command.args(args).env(VARIABLE, ARENAS).exec();
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
