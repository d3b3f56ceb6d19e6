//! Reading what a user gives us: files and standard input are read up to a
//! bound (so `/dev/zero` or a runaway pipe is an error, not an
//! out-of-memory abort), and a UTF-8 byte-order mark, which editors on some
//! systems write, is dropped before any parser sees the text.

use std::io::Read;
use std::path::Path;

use crate::{Error, Result};

/// The largest input file read (256 MiB): the shared benchmark's largest
/// file is a few MB, and a generation's JSONL of 10⁵ samples is tens of MB.
pub const MAX_INPUT_BYTES: u64 = 256 << 20;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// `bytes` without a leading UTF-8 byte-order mark.
pub fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(BOM).unwrap_or(bytes)
}

/// `text` without a leading byte-order mark.
pub fn strip_bom_str(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

/// Reads `from` to its end, refusing more than [`MAX_INPUT_BYTES`];
/// `name` is what the error calls it.
pub fn read_bounded(from: impl Read, name: &str) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    from.take(MAX_INPUT_BYTES + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > MAX_INPUT_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{name} is larger than {} MiB, the most an input may hold",
                MAX_INPUT_BYTES >> 20
            ),
        ));
    }
    Ok(buf)
}

/// Opens `path` for reading if it is a regular file (through links):
/// a FIFO, a device or a folder is refused before it is opened, since
/// opening a FIFO without a writer would wait for ever.
pub fn open_regular(path: &Path) -> Result<std::fs::File> {
    let not_regular = |what: &str| {
        Error::Invalid(format!(
            "{}: {what}, not a regular file; give a file",
            path.display()
        ))
    };
    let kind = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !kind.is_file() {
        return Err(not_regular(file_kind(&kind)));
    }
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // The path may have been swapped between the two calls.
    let kind = f.metadata().map_err(|e| Error::io(path, e))?;
    if !kind.is_file() {
        return Err(not_regular(file_kind(&kind)));
    }
    Ok(f)
}

fn file_kind(m: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = m.file_type();
    if t.is_dir() {
        "a folder"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else {
        "not a plain file"
    }
}

/// A file's bytes, bounded; errors name the path. Only regular files are
/// read ([`open_regular`]).
pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    let f = open_regular(path)?;
    read_bounded(f, &path.display().to_string()).map_err(|e| Error::io(path, e))
}

/// A file's text, bounded, without a byte-order mark; errors name the path
/// (and say so when it is not UTF-8).
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = read_file(path)?;
    let text = String::from_utf8(bytes).map_err(|e| {
        Error::Invalid(format!(
            "{}: not UTF-8 text (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })?;
    Ok(strip_bom_str(&text).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_reads_refuse_endless_input_and_drop_the_bom() {
        let endless = std::io::repeat(0).take(MAX_INPUT_BYTES + 10);
        let e = read_bounded(endless, "<stdin>").unwrap_err();
        assert!(
            e.to_string().contains("<stdin> is larger than 256 MiB"),
            "{e}"
        );
        assert_eq!(read_bounded(&b"abc"[..], "x").unwrap(), b"abc");
        assert_eq!(strip_bom(b"\xEF\xBB\xBF(define"), b"(define");
        assert_eq!(strip_bom(b"(define"), b"(define");
        assert_eq!(strip_bom_str("\u{feff}a = 1"), "a = 1");
    }
}
