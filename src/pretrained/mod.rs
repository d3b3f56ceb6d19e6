//! A pretrained language model in the loop: read a GGUF file of the llama
//! architecture (SmolLM2-135M-Instruct, fetched by `peers/fetch-model.sh`),
//! build its tokenizer from the file's metadata, run its decoder on
//! dequantized f32 weights with candle ops that all have a backward pass,
//! and deploy it as a policy whose θ is LoRA adapters (`[policy] kind =
//! "pretrained"`).
//!
//! | file | concept |
//! |---|---|
//! | `gguf.rs` | the file: hyper-parameters, tokenizer tables, f32 weights |
//! | `tokenizer.rs` | byte-level BPE from the metadata; chat turns with special tokens by id |
//! | `llama.rs` | the decoder: RMSNorm, interleaved RoPE, grouped-query attention, SwiGLU, tied output; a key/value cache |
//! | `sample.rs` | N completions of a prompt: one prefill, a shared cache, batched decoding to the end-of-turn token |
//! | `lora.rs` | LoRA adapters on every linear layer; the frozen matmul whose backward is the input's only |
//! | `policy.rs` | the model as a deployment policy: chat prompts, completions judged by extractor and validator, θ = LoRA |

pub mod gguf;
pub mod llama;
pub mod lora;
pub mod policy;
pub mod sample;
pub mod tokenizer;

pub use gguf::{Config, Gguf};
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
