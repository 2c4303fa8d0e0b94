//! `btic inspect FILE.xml...`: prints the sessions of saved `SupportSession` bodies as
//! JSON Lines, one `model::Session` per line (the same JSON the files destination writes
//! for `format = "json"`). Problems go to stderr, one line each; good sessions are
//! printed whatever happens to the others. A reader that goes away (`| head`) ends it
//! quietly, with status 0.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::cli::CliError;
use crate::parse::SessionReader;

/// Prints every session of every file; fails (exit 1) if any file or session had a
/// problem, after printing all that could be read.
pub fn inspect(files: &[PathBuf]) -> Result<(), CliError> {
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut problems = 0usize;
    for path in files {
        match inspect_file(path, &mut out) {
            Ok(n) => problems += n,
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(CliError::failed(format!("writing to stdout: {e}"))),
        }
    }
    match out.flush() {
        // The reader went away (`btic inspect … | head`): it has what it wanted.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
        Err(e) => return Err(CliError::failed(format!("writing to stdout: {e}"))),
        Ok(()) => {}
    }
    match problems {
        0 => Ok(()),
        n => Err(CliError::failed(format!(
            "{n} problem(s) while inspecting {} file(s); the sessions that could be read were printed",
            files.len()
        ))),
    }
}

/// Prints one file's sessions; returns how many problems were reported on stderr.
fn inspect_file(path: &Path, out: &mut impl Write) -> io::Result<usize> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) => {
            report(out, path, &format!("opening file: {e}"))?;
            return Ok(1);
        }
    };
    let mut problems = 0;
    let mut sessions = 0;
    let mut reader = SessionReader::new(BufReader::with_capacity(256 * 1024, file));
    for item in reader.by_ref() {
        match item {
            Ok(parsed) => {
                sessions += 1;
                serde_json::to_writer(&mut *out, &parsed.session).map_err(|e| {
                    match e.io_error_kind() {
                        // Keep the kind, so a closed pipe is still one.
                        Some(kind) => io::Error::new(kind, e),
                        None => io::Error::other(e),
                    }
                })?;
                out.write_all(b"\n")?;
            }
            Err(e) => {
                problems += 1;
                report(out, path, &e.to_string())?;
            }
        }
    }
    if sessions == 0 && problems == 0 {
        // Not a problem (an empty report is valid), but say why nothing was printed.
        let root = reader.root_name().unwrap_or_default();
        out.flush()?;
        eprintln!(
            "btic: {}: no <session> elements (root element <{root}>)",
            path.display()
        );
    }
    Ok(problems)
}

/// One problem line on stderr, after what stdout holds so far (so a terminal shows them
/// in order).
fn report(out: &mut impl Write, path: &Path, message: &str) -> io::Result<()> {
    out.flush()?;
    eprintln!("btic: {}: {message}", path.display());
    Ok(())
}
