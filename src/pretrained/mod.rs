//! A pretrained language model in the loop: read a GGUF file of the llama
//! architecture (SmolLM2-135M-Instruct, fetched by `peers/fetch-model.sh`)
//! and build its tokenizer from the file's metadata, or read a local
//! Hugging Face directory of a llama, qwen2 or qwen3 model; run its decoder on
//! dequantized f32 weights with candle ops that all have a backward pass,
//! and deploy it as a policy whose θ is LoRA adapters (`[policy] kind =
//! "pretrained"`).
//!
//! | file | concept |
//! |---|---|
//! | `config.rs` | the decoder's shape and variant (llama, qwen2, qwen3; how RoPE pairs coordinates) |
//! | `gguf.rs` | a GGUF file: hyper-parameters, tokenizer tables, f32 weights |
//! | `hf.rs` | a Hugging Face directory: `config.json`, `tokenizer.json`, `*.safetensors` |
//! | `tokenizer.rs` | byte-level BPE from the metadata; chat turns with special tokens by id |
//! | `llama.rs` | the decoder: RMSNorm, interleaved RoPE, grouped-query attention, SwiGLU, tied output; a key/value cache |
//! | `sample.rs` | N completions of a prompt: one prefill, a shared cache, batched decoding to the end-of-turn token |
//! | `lora.rs` | LoRA adapters on every linear layer; the frozen matmul whose backward is the input's only |
//! | `policy.rs` | the model as a deployment policy: chat prompts, completions judged by extractor and validator, θ = LoRA |

pub mod config;
pub mod frozen;
mod fused;
pub mod gguf;
pub mod hf;
pub mod llama;
pub mod lora;
pub mod policy;
pub mod sample;
pub mod tokenizer;

pub use config::{Config, RopePairs};
pub use gguf::Gguf;
pub use hf::HfDir;
pub use llama::Llama;
pub use lora::LoraConfig;
pub use policy::Pretrained;
pub use tokenizer::ChatTokenizer;

/// The GGUF file `peers/fetch-model.sh` puts in the cache, if it is there:
/// `$ITERDEPLOY_MODELS/SmolLM2-135M-Instruct.Q4_1.gguf`, else under
/// `~/.cache/iterdeploy/models/`.
pub fn cached_model() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("ITERDEPLOY_MODELS")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| std::path::Path::new(&h).join(".cache/iterdeploy/models"))
        })?;
    let path = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    path.is_file().then_some(path)
}

/// The decoder's shape of the model at `path`: a GGUF file, or a Hugging
/// Face directory (`config.json`, `tokenizer.json`, `*.safetensors`).
pub fn read_config(path: &std::path::Path) -> crate::Result<Config> {
    if path.is_dir() {
        Ok(HfDir::open(path)?.config)
    } else {
        Gguf::open(path)?.config()
    }
}

/// The tokenizer and the decoder (f32 weights on `device`) of the model
/// at `path`, either kind (see [`read_config`]).
pub fn load(
    path: &std::path::Path,
    device: &candle_core::Device,
) -> crate::Result<(ChatTokenizer, Llama)> {
    let (tokenizer, model) = if path.is_dir() {
        let d = HfDir::open(path)?;
        (
            ChatTokenizer::from_file(&d.tokenizer_path())?,
            Llama::load_hf(&d, device)?,
        )
    } else {
        let g = Gguf::open(path)?;
        (ChatTokenizer::from_gguf(&g)?, Llama::load(&g, device)?)
    };
    check_ids(&tokenizer, &model.config)
        .map_err(|e| crate::Error::Invalid(format!("{}: {e}", path.display())))?;
    Ok((tokenizer, model))
}

/// Every id the tokenizer can produce is a row of the embedding and of
/// the output: an id past them would index outside the weights.
fn check_ids(t: &ChatTokenizer, c: &Config) -> Result<(), String> {
    if t.vocab > c.vocab {
        return Err(format!(
            "the tokenizer has ids up to {}, but the model's vocabulary has {} rows",
            t.vocab - 1,
            c.vocab
        ));
    }
    for (name, id) in [
        ("<|im_start|>", t.im_start),
        ("<|im_end|>", t.im_end),
        ("end of turn", t.eos),
    ] {
        if id as usize >= c.vocab {
            return Err(format!(
                "{name} is id {id}, past the model's {} rows",
                c.vocab
            ));
        }
    }
    Ok(())
}
