//! Lines for people, on stderr: stdout carries a command's result only.

/// An informational line.
pub fn note(line: impl AsRef<str>) {
    eprintln!("{}", line.as_ref());
}

/// A warning.
pub fn warn(line: impl AsRef<str>) {
    eprintln!("Warning: {}", line.as_ref());
}
