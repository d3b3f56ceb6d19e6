//! Reading a GGUF file of the llama architecture: the hyper-parameters and
//! tokenizer tables from its metadata, and every weight dequantized to f32
//! (prefill and batched decoding are faster on f32 weights than on the
//! quantized CPU kernels, and only f32 ops have a backward pass).

use std::collections::HashMap;
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
    /// Reads the header and metadata (not the tensors).
    pub fn open(path: &Path) -> Result<Gguf> {
        let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let content = Content::read(&mut f)
            .map_err(|e| invalid(path, format!("not a readable GGUF file: {e}")))?;
        let g = Gguf {
            path: path.to_path_buf(),
            content,
        };
        let arch = g.string("general.architecture")?;
        if arch != "llama" {
            return Err(invalid(
                path,
                format!("architecture `{arch}` is not supported (llama is)"),
            ));
        }
        Ok(g)
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
        let mut f = std::fs::File::open(&self.path).map_err(|e| Error::io(&self.path, e))?;
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
