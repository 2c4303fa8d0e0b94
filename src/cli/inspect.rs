//! `btic inspect FILE.xml...`: prints the sessions of saved `SupportSession` bodies as
//! JSON Lines, one `model::Session` per line (the same JSON the files destination writes
//! for `format = "json"`). Problems go to stderr, one line each; good sessions are
//! printed whatever happens to the others. A reader that goes away (`| head`) ends it
//! quietly, with status 0. Each file is parsed on a thread of its own while this one
//! writes the JSON.

use std::fs::File;
use std::io::{self, BufRead, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use crate::cli::CliError;
use crate::model::Session;
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

/// Sessions (or the problem that stopped one) handed from the parse thread to the
/// writer at a time: enough to make the hand-over's cost small beside the work.
const BATCH: usize = 64;

/// Sessions, or the problem that stopped one, in the file's order.
type Batch = Vec<Result<Session, String>>;

/// Prints one file's sessions; returns how many problems were reported on stderr. The
/// file is parsed on a thread of its own, a few batches ahead of this one writing the
/// JSON, so that the two take a core each.
fn inspect_file(path: &Path, out: &mut impl Write) -> io::Result<usize> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) => {
            report(out, path, &format!("opening file: {e}"))?;
            return Ok(1);
        }
    };
    let (filled, chunks) = mpsc::sync_channel::<io::Result<Vec<u8>>>(CHUNKS_AHEAD);
    let (spent, empties) = mpsc::channel::<Vec<u8>>();
    let (sender, batches) = mpsc::sync_channel::<Batch>(4);
    // Written batches come back to be freed where they were allocated: glibc frees a
    // chunk of another thread's arena under that arena's lock, which the parse thread's
    // allocations then wait for.
    let (give_back, written_back) = mpsc::channel::<Batch>();
    std::thread::scope(|scope| {
        scope.spawn(move || read_chunks(file, &filled, &empties));
        let parser = scope.spawn(move || {
            let body = Chunks {
                filled: chunks,
                spent,
                current: Vec::new(),
                pos: 0,
            };
            // The raw bytes are not printed.
            let mut reader = SessionReader::new(body).without_raw();
            let mut batch = Vec::with_capacity(BATCH);
            for item in reader.by_ref() {
                batch.push(item.map(|p| p.session).map_err(|e| e.to_string()));
                if batch.len() == BATCH {
                    written_back.try_iter().for_each(drop);
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                    if sender.send(full).is_err() {
                        // The writer stopped (a closed pipe): nothing more is wanted.
                        return None;
                    }
                }
            }
            if !batch.is_empty() && sender.send(batch).is_err() {
                return None;
            }
            Some(reader.root_name().unwrap_or_default().to_owned())
        });
        let written = write_sessions(path, batches, &give_back, out);
        // A parse thread that panicked is a bug to show, not a problem of the file.
        let root = parser
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
        match (written?, root) {
            (
                Written {
                    sessions: 0,
                    problems: 0,
                },
                Some(root),
            ) => {
                // Not a problem (an empty report is valid), but say why nothing was
                // printed.
                out.flush()?;
                eprintln!(
                    "btic: {}: no <session> elements (root element <{root}>)",
                    path.display()
                );
                Ok(0)
            }
            (written, _) => Ok(written.problems),
        }
    })
}

/// Bytes of the file read at a time, and how many such chunks the reading thread may be
/// ahead of the parser.
const CHUNK: usize = 256 * 1024;
const CHUNKS_AHEAD: usize = 4;

/// Reads `file` in chunks and hands them to the parse thread, reusing the chunks it has
/// finished with, until the end of the file, an error (handed on as the next chunk), or
/// the parse thread stopping. The parse thread then neither waits for the disk nor
/// copies out of the kernel itself.
fn read_chunks(
    mut file: File,
    filled: &mpsc::SyncSender<io::Result<Vec<u8>>>,
    empties: &mpsc::Receiver<Vec<u8>>,
) {
    loop {
        let mut chunk = empties
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
        chunk.clear();
        match (&mut file).take(CHUNK as u64).read_to_end(&mut chunk) {
            Ok(0) => return,
            Ok(_) => {
                if filled.send(Ok(chunk)).is_err() {
                    return;
                }
            }
            Err(e) => {
                // What was read before the error comes first, as from a plain reader.
                if !chunk.is_empty() && filled.send(Ok(chunk)).is_err() {
                    return;
                }
                drop(filled.send(Err(e)));
                return;
            }
        }
    }
}

/// The file as the reading thread hands it over, chunk by chunk; ends when that thread
/// has sent its last chunk.
struct Chunks {
    filled: mpsc::Receiver<io::Result<Vec<u8>>>,
    /// Chunks read to the end, going back to be filled again.
    spent: mpsc::Sender<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
}

impl Read for Chunks {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl Chunks {
    /// Takes the next chunk once the current one is read to the end.
    #[cold]
    #[inline(never)]
    fn next_chunk(&mut self) -> io::Result<()> {
        let next = match self.filled.recv() {
            Ok(chunk) => chunk?,
            // The reading thread has sent everything: the end of the file.
            Err(mpsc::RecvError) => Vec::new(),
        };
        let done = std::mem::replace(&mut self.current, next);
        self.pos = 0;
        // The reading thread may have finished; then the chunk is simply freed.
        drop(self.spent.send(done));
        Ok(())
    }
}

impl BufRead for Chunks {
    // The parser asks for the buffer once or more per event: the common case (bytes
    // left in the current chunk) has to be as cheap as `BufReader`'s.
    #[inline]
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos == self.current.len() {
            self.next_chunk()?;
        }
        Ok(&self.current[self.pos..])
    }

    #[inline]
    fn consume(&mut self, amount: usize) {
        self.pos = (self.pos + amount).min(self.current.len());
    }
}

/// What the writer did with one file.
struct Written {
    sessions: usize,
    problems: usize,
}

/// Writes each session as a JSON line and reports each problem, in the file's order.
fn write_sessions(
    path: &Path,
    batches: mpsc::Receiver<Batch>,
    give_back: &mpsc::Sender<Batch>,
    out: &mut impl Write,
) -> io::Result<Written> {
    let mut written = Written {
        sessions: 0,
        problems: 0,
    };
    for batch in batches {
        for item in &batch {
            match item {
                Ok(session) => {
                    written.sessions += 1;
                    serde_json::to_writer(&mut *out, session).map_err(|e| {
                        match e.io_error_kind() {
                            // Keep the kind, so a closed pipe is still one.
                            Some(kind) => io::Error::new(kind, e),
                            None => io::Error::other(e),
                        }
                    })?;
                    out.write_all(b"\n")?;
                }
                Err(problem) => {
                    written.problems += 1;
                    report(out, path, problem)?;
                }
            }
        }
        // Once the parse thread has finished it frees nothing more, and the batch is
        // dropped here with the send's error.
        drop(give_back.send(batch));
    }
    Ok(written)
}

/// One problem line on stderr, after what stdout holds so far (so a terminal shows them
/// in order).
fn report(out: &mut impl Write, path: &Path, message: &str) -> io::Result<()> {
    out.flush()?;
    eprintln!("btic: {}: {message}", path.display());
    Ok(())
}
