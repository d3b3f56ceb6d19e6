//! The model's tokenizer, built from the GGUF metadata: byte-level BPE
//! (`tokenizer.ggml.model = gpt2`) over `tokenizer.ggml.tokens` and
//! `tokenizer.ggml.merges`, with the SmolLM pre-tokenizer (single digits,
//! then the GPT-2 split) and **no** added prefix space
//! (`tokenizer.ggml.add_space_prefix = false`; candle's GGUF tokenizer adds
//! one, which shifts every token of this model).
//!
//! A Hugging Face directory's `tokenizer.json` is read as it is
//! ([`ChatTokenizer::from_file`]); its normaliser and pre-tokenizer are the
//! model's own.
//!
//! Chat turns are built here, with the special tokens `<|im_start|>` and
//! `<|im_end|>` inserted by id, never by text: text is only ever encoded
//! as text, so a prompt containing "<|im_end|>" cannot end a turn.

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{PreTokenizerWrapper, Tokenizer};

use super::gguf::Gguf;
use crate::{Error, Result};

/// Text ↔ token ids, and the chat template's special ids.
pub struct ChatTokenizer {
    inner: Tokenizer,
    pub im_start: u32,
    pub im_end: u32,
    /// End of the assistant's turn: sampling stops here.
    pub eos: u32,
    /// One more than the largest id the tokenizer can produce.
    pub vocab: usize,
}

fn bad(what: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("tokenizer: {what}"))
}

impl ChatTokenizer {
    pub fn from_gguf(g: &Gguf) -> Result<ChatTokenizer> {
        let model = g.string("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(bad(format!(
                "{}: tokenizer model `{model}` is not supported (byte-level BPE, `gpt2`, is)",
                g.path().display()
            )));
        }
        // The pre-tokenizer below is SmolLM's; another model's (llama 3,
        // qwen2, …) would split text differently and silently.
        if let Ok(pre) = g.string("tokenizer.ggml.pre")
            && pre != "smollm"
        {
            return Err(bad(format!(
                "{}: pre-tokenizer `{pre}` is not supported from GGUF metadata (smollm is); \
                 give the model as a Hugging Face directory with its tokenizer.json",
                g.path().display()
            )));
        }
        let tokens = g.strings("tokenizer.ggml.tokens")?;
        let merges: Vec<(String, String)> = g
            .strings("tokenizer.ggml.merges")?
            .into_iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| bad(format!("merge `{m}` is not two tokens")))
            })
            .collect::<Result<_>>()?;
        if merges.is_empty() {
            return Err(bad(format!(
                "{}: `tokenizer.ggml.merges` is empty; byte-level BPE needs its merges",
                g.path().display()
            )));
        }
        let mut vocab: std::collections::HashMap<String, u32> =
            std::collections::HashMap::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            if let Some(first) = vocab.insert(t.clone(), i as u32) {
                return Err(bad(format!(
                    "{}: token `{t}` appears twice in `tokenizer.ggml.tokens` (ids {first} and {i})",
                    g.path().display()
                )));
            }
        }
        let id_of = |t: &str| {
            vocab
                .get(t)
                .copied()
                .ok_or_else(|| bad(format!("special token `{t}` is not in the vocabulary")))
        };
        let (im_start, im_end) = (id_of("<|im_start|>")?, id_of("<|im_end|>")?);
        let eos = g.token_id("tokenizer.ggml.eos_token_id").unwrap_or(im_end);
        if eos as usize >= tokens.len() {
            return Err(bad(format!(
                "{}: `tokenizer.ggml.eos_token_id` = {eos} is not an id of the {} tokens",
                g.path().display(),
                tokens.len()
            )));
        }
        let bpe = BPE::builder()
            .vocab_and_merges(
                vocab
                    .iter()
                    .map(|(t, &i)| (t.clone(), i))
                    .collect::<tokenizers::models::bpe::Vocab>(),
                merges,
            )
            .build()
            .map_err(|e| bad(e.to_string()))?;
        let mut inner = Tokenizer::new(bpe);
        let pre: Vec<PreTokenizerWrapper> = vec![
            Digits::new(true).into(),
            ByteLevel::new(false, true, true).into(),
        ];
        inner.with_pre_tokenizer(Some(Sequence::new(pre)));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        Ok(ChatTokenizer {
            inner,
            im_start,
            im_end,
            eos,
            vocab: tokens.len(),
        })
    }

    /// A `tokenizer.json` as the model ships it. The chat template is
    /// ChatML (`<|im_start|>`, `<|im_end|>`, as SmolLM2 and Qwen use);
    /// the turn ends at `<|im_end|>`.
    pub fn from_file(path: &std::path::Path) -> Result<ChatTokenizer> {
        let text = crate::input::read_text(path)?;
        let inner: Tokenizer = text
            .parse()
            .map_err(|e| bad(format!("{}: {e}", path.display())))?;
        let id_of = |t: &str| {
            inner.token_to_id(t).ok_or_else(|| {
                bad(format!(
                    "{}: special token `{t}` is not in the vocabulary (a ChatML model is needed)",
                    path.display()
                ))
            })
        };
        let (im_start, im_end) = (id_of("<|im_start|>")?, id_of("<|im_end|>")?);
        // The ids may be sparse: the table must cover the largest.
        let vocab = inner
            .get_vocab(true)
            .values()
            .max()
            .map_or(0, |&m| m as usize + 1);
        Ok(ChatTokenizer {
            inner,
            im_start,
            im_end,
            eos: im_end,
            vocab,
        })
    }

    /// The ids of `text`, as plain text (no special tokens).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .inner
            .encode(text, false)
            .map_err(|e| bad(e.to_string()))?
            .get_ids()
            .to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| bad(e.to_string()))
    }

    /// A chat prompt ending where the assistant's answer begins:
    /// `<|im_start|>system\n…<|im_end|>\n<|im_start|>user\n…<|im_end|>\n<|im_start|>assistant\n`.
    pub fn chat_prompt(&self, system: &str, user: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        for (role, text) in [("system", system), ("user", user)] {
            ids.push(self.im_start);
            ids.extend(self.encode(&format!("{role}\n{text}"))?);
            ids.push(self.im_end);
            ids.extend(self.encode("\n")?);
        }
        ids.push(self.im_start);
        ids.extend(self.encode("assistant\n")?);
        Ok(ids)
    }
}
