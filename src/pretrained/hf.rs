//! Reading a local Hugging Face model directory: `config.json` (llama,
//! qwen2 or qwen3), `tokenizer.json`, and the weights in one or more
//! `*.safetensors` files (any float dtype, converted to f32). This is
//! what a GPU user has for Qwen3 models; nothing is downloaded.
//!
//! The weights keep the checkpoint's RoPE pairing ([`RopePairs::Halves`])
//! and are renamed to the GGUF names the decoder reads
//! (`model.layers.3.self_attn.q_proj.weight` → `blk.3.attn_q.weight`), so
//! one decoder serves both kinds of file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::config::{Config, RopePairs};
use crate::{Error, Result};

fn invalid(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("{}: {what}", path.display()))
}

/// The keys of `config.json` the decoder needs. Families differ in their
/// defaults (serde's `default` where a key may be absent).
#[derive(serde::Deserialize)]
struct HfConfig {
    model_type: String,
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    intermediate_size: usize,
    rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    rope_theta: f64,
    max_position_embeddings: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
    /// qwen3 and llama may set it; qwen2 always has q/k/v biases.
    attention_bias: Option<bool>,
    hidden_act: Option<String>,
    rope_scaling: Option<serde_json::Value>,
}

fn default_rope_theta() -> f64 {
    10_000.0
}

/// A model directory, its shape read and checked.
pub struct HfDir {
    dir: PathBuf,
    pub config: Config,
    tied: bool,
}

impl HfDir {
    /// Reads and checks `dir/config.json` (not the weights).
    pub fn open(dir: &Path) -> Result<HfDir> {
        let path = dir.join("config.json");
        let text = crate::input::read_text(&path)?;
        // serde_json's message names the line and column.
        let hf: HfConfig = serde_json::from_str(&text).map_err(|e| invalid(&path, e))?;
        let (qkv_bias, qk_norm) = match hf.model_type.as_str() {
            "llama" => (hf.attention_bias.unwrap_or(false), false),
            "qwen2" => (true, false),
            "qwen3" => (hf.attention_bias.unwrap_or(false), true),
            other => {
                return Err(invalid(
                    &path,
                    format!("model_type `{other}` is not supported (llama, qwen2 and qwen3 are)"),
                ));
            }
        };
        if let Some(act) = hf.hidden_act.as_deref().filter(|a| *a != "silu") {
            return Err(invalid(
                &path,
                format!("hidden_act `{act}` is not supported (silu is)"),
            ));
        }
        if let Some(s) = hf.rope_scaling.as_ref().filter(|s| !s.is_null()) {
            return Err(invalid(
                &path,
                format!("rope_scaling {s} is not supported (plain RoPE is)"),
            ));
        }
        let heads = hf.num_attention_heads;
        let config = Config {
            vocab: hf.vocab_size,
            d_model: hf.hidden_size,
            layers: hf.num_hidden_layers,
            heads,
            kv_heads: hf.num_key_value_heads.unwrap_or(heads),
            head_dim: hf
                .head_dim
                .unwrap_or(hf.hidden_size.checked_div(heads).unwrap_or(0)),
            d_ff: hf.intermediate_size,
            rms_eps: hf.rms_norm_eps,
            rope_base: hf.rope_theta,
            rope_pairs: RopePairs::Halves,
            context: hf.max_position_embeddings,
            qkv_bias,
            qk_norm,
        };
        config
            .check()
            .map_err(|e| invalid(&path, format!("inconsistent shape: {e}")))?;
        Ok(HfDir {
            dir: dir.to_path_buf(),
            config,
            tied: hf.tie_word_embeddings,
        })
    }

    pub fn tokenizer_path(&self) -> PathBuf {
        self.dir.join("tokenizer.json")
    }

    /// The `*.safetensors` files, in name order (shards of one checkpoint).
    fn weight_files(&self) -> Result<Vec<PathBuf>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map_err(|e| Error::io(&self.dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(invalid(&self.dir, "no *.safetensors file"));
        }
        Ok(files)
    }

    /// Every weight the decoder reads, in f32 on `device`, under its GGUF
    /// name. A tensor the decoder does not know is an error (it would
    /// mean a variant this reader does not implement), except rotary
    /// tables some checkpoints store.
    pub fn weights(&self, device: &Device) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        // No shard can be larger than every weight in f32 (an untied
        // output counted twice) plus 64 MiB for norms, biases and the
        // header: a larger file is not this model's.
        let c = &self.config;
        let most = (c.num_weights() as u64 + (c.vocab * c.d_model) as u64) * 4 + (64 << 20);
        for file in self.weight_files()? {
            let len = crate::input::open_regular(&file)?
                .metadata()
                .map_err(|e| Error::io(&file, e))?
                .len();
            if len > most {
                return Err(invalid(
                    &file,
                    format!(
                        "{len} bytes, more than this model's weights can take in f32 ({most} bytes)"
                    ),
                ));
            }
            let tensors = candle_core::safetensors::load(&file, device)
                .map_err(|e| invalid(&file, format!("not a readable safetensors file: {e}")))?;
            for (name, t) in tensors {
                if name.ends_with("rotary_emb.inv_freq") {
                    continue;
                }
                let gguf = gguf_name(&name).ok_or_else(|| {
                    invalid(
                        &file,
                        format!("tensor `{name}` is not one the decoder reads"),
                    )
                })?;
                if !matches!(
                    t.dtype(),
                    DType::F16 | DType::BF16 | DType::F32 | DType::F64
                ) {
                    return Err(invalid(
                        &file,
                        format!(
                            "tensor `{name}` holds {:?}, not floating-point weights",
                            t.dtype()
                        ),
                    ));
                }
                let t = t
                    .to_dtype(DType::F32)
                    .map_err(|e| invalid(&file, format!("`{name}`: {e}")))?;
                if out.insert(gguf, t).is_some() {
                    return Err(invalid(&file, format!("tensor `{name}` appears twice")));
                }
            }
        }
        if !self.tied && !out.contains_key("output.weight") {
            return Err(invalid(
                &self.dir,
                "tie_word_embeddings is false but there is no lm_head.weight",
            ));
        }
        Ok(out)
    }
}

/// The GGUF name of a Hugging Face tensor name, if the decoder reads it.
fn gguf_name(hf: &str) -> Option<String> {
    match hf {
        "model.embed_tokens.weight" => return Some("token_embd.weight".into()),
        "model.norm.weight" => return Some("output_norm.weight".into()),
        "lm_head.weight" => return Some("output.weight".into()),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, kind) = rest.rsplit_once('.')?;
    if kind != "weight" && kind != "bias" {
        return None;
    }
    let ours = match module {
        "input_layernorm" => "attn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "self_attn.q_norm" => "attn_q_norm",
        "self_attn.k_norm" => "attn_k_norm",
        "post_attention_layernorm" => "ffn_norm",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{layer}.{ours}.{kind}"))
}

#[cfg(test)]
mod tests {
    use super::gguf_name;

    #[test]
    fn checkpoint_names_map_to_the_decoders_names() {
        assert_eq!(
            gguf_name("model.layers.12.self_attn.k_proj.bias").as_deref(),
            Some("blk.12.attn_k.bias")
        );
        assert_eq!(
            gguf_name("model.layers.0.self_attn.q_norm.weight").as_deref(),
            Some("blk.0.attn_q_norm.weight")
        );
        assert_eq!(
            gguf_name("lm_head.weight").as_deref(),
            Some("output.weight")
        );
        assert_eq!(gguf_name("model.layers.x.mlp.up_proj.weight"), None);
        assert_eq!(gguf_name("model.layers.1.mlp.up_proj.scales"), None);
        assert_eq!(gguf_name("vision_tower.weight"), None);
    }
}
