//! Where the service's log lines go: a buffer that a thread of its own writes to
//! stderr, so that a request's access line costs a copy into memory rather than a
//! system call on the event loop.
//!
//! Lines keep their order (one buffer, one writer). The thread writes what gathered
//! every [`FLUSH_INTERVAL`]; a writer that finds [`MAX_BUFFERED`] bytes waiting writes
//! them out itself, so memory stays bounded and a slow stderr slows the logging
//! threads rather than growing the buffer. [`flush`] writes out what is left; the
//! binary calls it before exiting and before a panic's message.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long a line may wait in memory before it is written.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(10);
/// The most bytes kept in memory before a logging thread writes them itself.
pub const MAX_BUFFERED: usize = 256 * 1024;

/// A line-ordered buffer in front of `W`.
pub struct Sink<W> {
    /// Lines not yet handed to `out`.
    buffer: Mutex<Vec<u8>>,
    /// The output, and the batch being written to it. Taking a batch from `buffer`
    /// happens while this is held, so batches are written in the order they were taken.
    out: Mutex<(W, Vec<u8>)>,
    pending: Condvar,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<W: Write> Sink<W> {
    /// A sink over `out`; nothing writes it until [`Self::flush`] is called.
    fn new(out: W) -> Self {
        Self {
            buffer: Mutex::new(Vec::with_capacity(16 * 1024)),
            out: Mutex::new((out, Vec::with_capacity(16 * 1024))),
            pending: Condvar::new(),
        }
    }

    /// Writes out every line logged so far. Logging threads keep appending meanwhile.
    /// A failed write drops that batch: there is nowhere left to report it.
    pub fn flush(&self) {
        let mut out = lock(&self.out);
        let (out, batch) = &mut *out;
        std::mem::swap(&mut *lock(&self.buffer), batch);
        if !batch.is_empty() {
            let _ = out.write_all(batch);
            let _ = out.flush();
            batch.clear();
        }
    }

    fn append(&self, line: &[u8]) {
        let mut buffer = lock(&self.buffer);
        let was_empty = buffer.is_empty();
        buffer.extend_from_slice(line);
        let full = buffer.len() >= MAX_BUFFERED;
        drop(buffer);
        if full {
            self.flush();
        } else if was_empty {
            self.pending.notify_one();
        }
    }
}

impl<W: Write + Send + 'static> Sink<W> {
    /// A sink over `out`, with the thread that writes it every [`FLUSH_INTERVAL`].
    pub fn spawn(out: W) -> io::Result<Arc<Self>> {
        let sink = Arc::new(Self::new(out));
        let writer = sink.clone();
        std::thread::Builder::new()
            .name("keyward-log".into())
            .spawn(move || writer.run())?;
        Ok(sink)
    }

    fn run(&self) {
        loop {
            // Sleep until something is logged, then let the next lines gather.
            drop(
                self.pending
                    .wait_while(lock(&self.buffer), |buffer| buffer.is_empty())
                    .unwrap_or_else(PoisonError::into_inner),
            );
            std::thread::sleep(FLUSH_INTERVAL);
            self.flush();
        }
    }
}

/// What the log formatter writes one event into.
pub struct Line<'a, W>(&'a Sink<W>);

impl<W: Write> Write for Line<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The sink as the formatter's writer.
pub struct Writer<W>(pub Arc<Sink<W>>);

impl<'a, W: Write + 'a> MakeWriter<'a> for Writer<W> {
    type Writer = Line<'a, W>;

    fn make_writer(&'a self) -> Self::Writer {
        Line(&self.0)
    }
}

static STDERR: OnceLock<Arc<Sink<io::Stderr>>> = OnceLock::new();

/// The process's stderr sink, started on first use. Panic messages flush it first, so
/// they follow the lines logged before them. Fails only if its thread cannot start.
pub fn stderr() -> io::Result<Writer<io::Stderr>> {
    if let Some(sink) = STDERR.get() {
        return Ok(Writer(sink.clone()));
    }
    let started = Sink::spawn(io::stderr())?;
    let sink = STDERR.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            flush();
            previous(info);
        }));
        started
    });
    Ok(Writer(sink.clone()))
}

/// Writes out what the stderr sink holds, if it was started.
pub fn flush() {
    if let Some(sink) = STDERR.get() {
        sink.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Write` whose bytes the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn lines_are_written_in_order_by_the_thread() {
        let out = Shared::default();
        let sink = Sink::spawn(out.clone()).unwrap();
        let writer = Writer(sink);
        for i in 0..100 {
            writeln!(writer.make_writer(), "line {i}").unwrap();
        }
        // The thread writes them, in order, without a flush from here.
        let expected: String = (0..100).map(|i| format!("line {i}\n")).collect();
        for _ in 0..200 {
            if out.text() == expected {
                return;
            }
            std::thread::sleep(FLUSH_INTERVAL);
        }
        panic!("not written: {}", out.text());
    }

    #[test]
    fn flush_writes_everything_at_once() {
        let out = Shared::default();
        let sink = Sink::new(out.clone());
        Line(&sink).write_all(b"first\n").unwrap();
        Line(&sink).write_all(b"second\n").unwrap();
        assert_eq!(out.text(), "");
        sink.flush();
        assert_eq!(out.text(), "first\nsecond\n");
    }

    #[test]
    fn a_full_buffer_is_written_by_its_writer() {
        let out = Shared::default();
        let sink = Sink::new(out.clone());
        let line = vec![b'x'; 1000];
        let mut written = 0;
        while written < MAX_BUFFERED {
            assert_eq!(out.text().len(), 0);
            Line(&sink).write_all(&line).unwrap();
            written += line.len();
        }
        assert_eq!(out.text().len(), written);
    }
}
