//! Writing to the terminal without panicking. `println!` panics when its
//! stream is gone (`bulkhead serve | head -1`, a closed terminal, a full
//! disk behind a redirect); a command reports that as its error instead,
//! and the server goes on serving.
use std::fmt;
use std::io::Write;

/// Writes a line to standard output; the error names the stream.
pub fn stdout_line(args: fmt::Arguments<'_>) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    out.write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .map_err(|e| format!("writing to standard output: {e}"))
}

/// Writes text (its own line ends) to standard output.
pub fn stdout_text(text: &str) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| format!("writing to standard output: {e}"))
}

/// Writes a line to standard error. A line that cannot be written there
/// has nowhere else to go, so it is dropped.
pub fn stderr_line(args: fmt::Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|()| err.write_all(b"\n"));
}

/// `println!` that returns an error instead of panicking.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::console::stdout_line(::std::format_args!($($arg)*))
    };
}

/// `eprintln!` that drops the line instead of panicking.
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::console::stderr_line(::std::format_args!($($arg)*))
    };
}
