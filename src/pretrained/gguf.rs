//! Reading a GGUF file of the llama architecture: the hyper-parameters and
//! tokenizer tables from its metadata, and every weight dequantized to f32
//! (prefill and batched decoding are faster on f32 weights than on the
//! quantized CPU kernels, and only f32 ops have a backward pass).

use std::collections::HashMap;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{Device, Tensor};

use super::config::Config;
use crate::{Error, Result};

/// An opened GGUF file: its metadata and where its tensors are.
pub struct Gguf {
    path: PathBuf,
    content: Content,
}

fn invalid(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("{}: {what}", path.display()))
}

impl Gguf {
    /// Reads the header and metadata (not the tensors), and checks the
    /// tensor layout: see [`Gguf::check_layout`].
    pub fn open(path: &Path) -> Result<Gguf> {
        let mut f = crate::input::open_regular(path)?;
        // candle divides by the alignment while reading the header: check
        // the key before it does.
        let alignment = header_alignment(&mut f)
            .map_err(|e| invalid(path, format!("not a readable GGUF file: {e}")))?;
        check_alignment(alignment).map_err(|e| invalid(path, e))?;
        f.rewind().map_err(|e| Error::io(path, e))?;
        let content = Content::read(&mut f)
            .map_err(|e| invalid(path, format!("not a readable GGUF file: {e}")))?;
        let file_len = f.metadata().map_err(|e| Error::io(path, e))?.len();
        let g = Gguf {
            path: path.to_path_buf(),
            content,
        };
        g.check_layout(alignment.unwrap_or(DEFAULT_ALIGNMENT), file_len)?;
        let arch = g.string("general.architecture")?;
        if arch != "llama" {
            return Err(invalid(
                path,
                format!("architecture `{arch}` is not supported (llama is)"),
            ));
        }
        Ok(g)
    }

    /// Every tensor's bytes lie in the file, at an offset the alignment
    /// divides, and the tensors tile the data section as GGUF writers lay
    /// them out: in offset order, each starting at the first aligned
    /// offset after the previous one's last byte (its size from its type
    /// and shape). A type that disagrees with the bytes its tensor was
    /// given, or two tensors sharing bytes, breaks that tiling.
    fn check_layout(&self, alignment: u64, file_len: u64) -> Result<()> {
        let base = self.content.tensor_data_offset;
        let mut spans: Vec<(u64, u64, &str)> = Vec::new();
        for (name, info) in &self.content.tensor_infos {
            let bad = |what: String| invalid(&self.path, format!("tensor `{name}`: {what}"));
            let dims = info.shape.dims();
            let elems = dims
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d as u64))
                .filter(|&n| n > 0)
                .ok_or_else(|| bad(format!("shape {dims:?} is empty or too large")))?;
            let block = info.ggml_dtype.block_size() as u64;
            if !elems.is_multiple_of(block) {
                return Err(bad(format!(
                    "{elems} elements do not fill whole blocks of {block} ({:?})",
                    info.ggml_dtype
                )));
            }
            let bytes = (elems / block)
                .checked_mul(info.ggml_dtype.type_size() as u64)
                .ok_or_else(|| bad("size overflows".into()))?;
            if !info.offset.is_multiple_of(alignment) {
                return Err(bad(format!(
                    "offset {} is not a multiple of the alignment {alignment}",
                    info.offset
                )));
            }
            let end = base
                .checked_add(info.offset)
                .and_then(|s| s.checked_add(bytes))
                .filter(|&e| e <= file_len)
                .ok_or_else(|| {
                    bad(format!(
                        "{bytes} bytes at offset {} run past the end of the {file_len}-byte file",
                        info.offset
                    ))
                })?;
            spans.push((info.offset, end - base, name));
        }
        spans.sort();
        let mut next = 0u64;
        for &(start, end, name) in &spans {
            if start != next {
                return Err(invalid(
                    &self.path,
                    format!(
                        "tensor `{name}` starts at data offset {start}, but the tensor before it ends at {next} (aligned): {}",
                        if start < next {
                            "the two share bytes"
                        } else {
                            "a gap the declared types do not account for"
                        }
                    ),
                ));
            }
            next = end.div_ceil(alignment) * alignment;
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn value(&self, key: &str) -> Result<&Value> {
        self.content
            .metadata
            .get(key)
            .ok_or_else(|| invalid(&self.path, format!("metadata key `{key}` is missing")))
    }

    pub fn string(&self, key: &str) -> Result<String> {
        match self.value(key)? {
            Value::String(s) => Ok(s.clone()),
            v => Err(invalid(
                &self.path,
                format!("`{key}` is {v:?}, not a string"),
            )),
        }
    }

    fn number(&self, key: &str) -> Result<f64> {
        let v = self.value(key)?;
        v.to_f64()
            .or_else(|_| v.to_f32().map(f64::from))
            .or_else(|_| v.to_u32().map(f64::from))
            .or_else(|_| v.to_u64().map(|x| x as f64))
            .or_else(|_| v.to_i32().map(f64::from))
            .map_err(|_| invalid(&self.path, format!("`{key}` is {v:?}, not a number")))
    }

    fn count(&self, key: &str) -> Result<usize> {
        let n = self.number(key)?;
        if n.fract() == 0.0 && n >= 1.0 && n <= u32::MAX as f64 {
            Ok(n as usize)
        } else {
            Err(invalid(
                &self.path,
                format!("`{key}` = {n} is not a positive count"),
            ))
        }
    }

    /// Strings of an array-valued key (tokens, merges).
    pub fn strings(&self, key: &str) -> Result<Vec<String>> {
        match self.value(key)? {
            Value::Array(items) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    v => Err(invalid(
                        &self.path,
                        format!("`{key}` holds {v:?}, not strings"),
                    )),
                })
                .collect(),
            v => Err(invalid(
                &self.path,
                format!("`{key}` is {v:?}, not an array"),
            )),
        }
    }

    /// A token id from the metadata (e.g. `tokenizer.ggml.eos_token_id`).
    pub fn token_id(&self, key: &str) -> Result<u32> {
        Ok(self.count(key).or_else(|_| {
            // Id 0 is a valid id; `count` wants ≥ 1.
            let n = self.number(key)?;
            if n == 0.0 {
                Ok(0)
            } else {
                Err(invalid(&self.path, format!("`{key}` = {n}")))
            }
        })? as u32)
    }

    /// The decoder's shape from the `llama.*` keys (GGUF files of this
    /// architecture pair RoPE coordinates interleaved).
    pub fn config(&self) -> Result<Config> {
        let mut c = Config::llama(
            self.count("llama.vocab_size")
                .or_else(|_| self.strings("tokenizer.ggml.tokens").map(|t| t.len()))?,
            self.count("llama.embedding_length")?,
            self.count("llama.block_count")?,
            self.count("llama.attention.head_count")?,
            self.count("llama.attention.head_count_kv")?,
            self.count("llama.feed_forward_length")?,
            self.number("llama.attention.layer_norm_rms_epsilon")?,
            self.number("llama.rope.freq_base").unwrap_or(10_000.0),
            self.count("llama.context_length")?,
        );
        if self.value("llama.attention.key_length").is_ok() {
            c.head_dim = self.count("llama.attention.key_length")?;
        }
        c.check()
            .map_err(|e| invalid(&self.path, format!("inconsistent shape: {e}")))?;
        Ok(c)
    }

    /// Every tensor, dequantized to f32 on `device`, by GGUF name.
    pub fn weights(&self, device: &Device) -> Result<HashMap<String, Tensor>> {
        let mut f = crate::input::open_regular(&self.path)?;
        let mut out = HashMap::new();
        let mut names: Vec<&String> = self.content.tensor_infos.keys().collect();
        names.sort();
        for name in names {
            let q = self
                .content
                .tensor(&mut f, name, device)
                .map_err(|e| invalid(&self.path, format!("tensor `{name}`: {e}")))?;
            let t = q
                .dequantize(device)
                .map_err(|e| invalid(&self.path, format!("dequantizing `{name}`: {e}")))?;
            out.insert(name.clone(), t);
        }
        Ok(out)
    }
}

/// The alignment GGUF writers use when the file names none.
const DEFAULT_ALIGNMENT: u64 = 32;

/// `general.alignment` must be a nonzero multiple of 8 (the GGUF
/// specification's rule), at most 1 MiB (larger would only be padding).
fn check_alignment(alignment: Option<u64>) -> std::result::Result<(), String> {
    match alignment {
        None => Ok(()),
        Some(a) if a > 0 && a.is_multiple_of(8) && a <= 1 << 20 => Ok(()),
        Some(a) => Err(format!(
            "general.alignment = {a} is not a nonzero multiple of 8 up to 1 MiB"
        )),
    }
}

/// The value of `general.alignment` in a GGUF header (`None` if absent),
/// read by walking the metadata before candle's reader sees the file. Any
/// integer type is accepted here so that a bad value is reported by
/// [`check_alignment`]; lengths are bounded by the file's size.
fn header_alignment(f: &mut std::fs::File) -> std::io::Result<Option<u64>> {
    fn bad(what: String) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, what)
    }
    struct Reader<'a> {
        f: std::io::BufReader<&'a mut std::fs::File>,
        left: u64,
        wide: bool,
    }
    impl Reader<'_> {
        fn bytes<const N: usize>(&mut self) -> std::io::Result<[u8; N]> {
            let mut b = [0u8; N];
            self.f.read_exact(&mut b)?;
            self.left = self.left.saturating_sub(N as u64);
            Ok(b)
        }
        fn u32(&mut self) -> std::io::Result<u32> {
            Ok(u32::from_le_bytes(self.bytes()?))
        }
        fn len(&mut self) -> std::io::Result<u64> {
            let n = if self.wide {
                u64::from_le_bytes(self.bytes()?)
            } else {
                u64::from(self.u32()?)
            };
            if n > self.left {
                return Err(bad(format!(
                    "a length of {n} runs past the end of the file"
                )));
            }
            Ok(n)
        }
        fn skip(&mut self, n: u64) -> std::io::Result<()> {
            self.f.seek_relative(n as i64)?;
            self.left = self.left.saturating_sub(n);
            Ok(())
        }
        fn string(&mut self) -> std::io::Result<Vec<u8>> {
            let n = self.len()?;
            let mut b = vec![0u8; n as usize];
            self.f.read_exact(&mut b)?;
            self.left = self.left.saturating_sub(n);
            Ok(b)
        }
        /// An integer value of type `t`, or skips a value of another type.
        fn value(&mut self, t: u32, depth: u32) -> std::io::Result<Option<u64>> {
            Ok(match t {
                0 => Some(u64::from(self.bytes::<1>()?[0])),
                1 => Some(i8::from_le_bytes(self.bytes()?) as u64),
                2 => Some(u64::from(u16::from_le_bytes(self.bytes()?))),
                3 => Some(i16::from_le_bytes(self.bytes()?) as u64),
                4 => Some(u64::from(self.u32()?)),
                5 => Some(i32::from_le_bytes(self.bytes()?) as u64),
                10 => Some(u64::from_le_bytes(self.bytes()?)),
                11 => Some(i64::from_le_bytes(self.bytes()?) as u64),
                6 => self.skip(4).map(|_| None)?,
                7 => self.skip(1).map(|_| None)?,
                12 => self.skip(8).map(|_| None)?,
                8 => {
                    let n = self.len()?;
                    self.skip(n).map(|_| None)?
                }
                9 if depth == 0 => {
                    let elem = self.u32()?;
                    let n = self.len()?;
                    for _ in 0..n {
                        self.value(elem, depth + 1)?;
                    }
                    None
                }
                t => return Err(bad(format!("value type {t} is not a GGUF type"))),
            })
        }
    }
    let left = f.metadata()?.len();
    let mut r = Reader {
        f: std::io::BufReader::new(f),
        left,
        wide: true,
    };
    let magic = r.bytes::<4>()?;
    if &magic != b"GGUF" {
        return Err(bad("no GGUF magic number".into()));
    }
    let version = r.u32()?;
    r.wide = version >= 2;
    let _tensors = r.len()?;
    let kvs = r.len()?;
    let mut alignment = None;
    for _ in 0..kvs {
        let key = r.string()?;
        let t = r.u32()?;
        let v = r.value(t, 0)?;
        if key == b"general.alignment" {
            alignment =
                Some(v.ok_or_else(|| {
                    bad(format!("general.alignment has type {t}, not an integer"))
                })?);
        }
    }
    Ok(alignment)
}
