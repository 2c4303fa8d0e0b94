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
