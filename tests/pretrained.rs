//! The pretrained model (issue 17, first part): the GGUF file of
//! `peers/fetch-model.sh` read into our f32 llama decoder, checked against
//! candle-transformers' quantized llama on the same file, and its
//! tokenizer built from the file's metadata. Without the cached model the
//! tests say so and skip (`.ci/run` fetches it first). Hugging Face
//! directories (llama, qwen2, qwen3) are checked on tiny checkpoints the
//! tests write, against candle-transformers' models of each family.

use candle_core::{Device, Tensor};
use iterdeploy::pretrained::{self, ChatTokenizer, Gguf, Llama};

fn model() -> Option<std::path::PathBuf> {
    let m = pretrained::cached_model();
    if m.is_none() {
        crate::common::skip_or_fail(
            "no cached model; run peers/fetch-model.sh (it puts SmolLM2-135M-Instruct.Q4_1.gguf under ~/.cache/iterdeploy/models)",
        );
    }
    m
}

#[test]
fn the_tokenizer_round_trips_and_inserts_chat_tokens_by_id() {
    let Some(path) = model() else { return };
    let g = Gguf::open(&path).unwrap();
    let tok = ChatTokenizer::from_gguf(&g).unwrap();
    assert_eq!(tok.vocab, 49152);
    assert_eq!((tok.im_start, tok.im_end), (1, 2));
    for text in [
        "(unstack b1 b2)\n(put-down b1)",
        "  two spaces, 12345 digits",
        "ünïcode ✓",
    ] {
        let ids = tok.encode(text).unwrap();
        assert_eq!(tok.decode(&ids).unwrap(), text);
    }
    // No leading space is added: "(" alone is one token, not "Ġ(".
    let ids = tok.encode("(").unwrap();
    assert_eq!(ids.len(), 1);
    assert_eq!(tok.decode(&ids).unwrap(), "(");
    // Digits are split one by one (the SmolLM pre-tokenizer).
    assert_eq!(tok.encode("123").unwrap().len(), 3);
    // Text that looks like a special token stays text.
    let fake = tok.encode("<|im_end|>").unwrap();
    assert!(fake.len() > 1 && !fake.contains(&tok.im_end), "{fake:?}");
    let prompt = tok.chat_prompt("You plan.", "Stack b1 on b2.").unwrap();
    assert_eq!(prompt[0], tok.im_start);
    assert_eq!(prompt.iter().filter(|&&i| i == tok.im_end).count(), 2);
    assert!(
        tok.decode(&prompt)
            .unwrap()
            .ends_with("<|im_start|>assistant\n")
    );
}

/// Our decoder on dequantized f32 weights against candle-transformers'
/// quantized llama on the same file: its matmuls quantize activations to
/// 8 bits, so logits agree to a few hundredths, not to round-off; a wrong
/// RoPE convention, head grouping or norm gives unrelated logits.
#[test]
fn the_decoder_matches_candle_transformers_quantized_llama() {
    let Some(path) = model() else { return };
    let device = Device::Cpu;
    let g = Gguf::open(&path).unwrap();
    let tok = ChatTokenizer::from_gguf(&g).unwrap();
    let ids = tok
        .chat_prompt("You are a planner.", "Write a plan: unstack b1 from b2.")
        .unwrap();
    let ours = Llama::load(&g, &device).unwrap();
    let logits = ours.forward(std::slice::from_ref(&ids)).unwrap();
    let t = ids.len();
    assert_eq!(logits.dims(), &[1, t, 49152]);
    // The reference: every position's logits, one token at a time
    // through its KV cache (its forward returns the last position only).
    let mut f = std::fs::File::open(&path).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut f).unwrap();
    let mut reference = candle_transformers::models::quantized_llama::ModelWeights::from_gguf(
        content, &mut f, &device,
    )
    .unwrap();
    let mut worst_cos = 1.0f64;
    let mut same_top = 0;
    for (p, &id) in ids.iter().enumerate() {
        let x = Tensor::new(&[id], &device).unwrap().unsqueeze(0).unwrap();
        let r = reference.forward(&x, p).unwrap().flatten_all().unwrap();
        let o = logits.get(0).unwrap().get(p).unwrap();
        let r: Vec<f32> = r.to_vec1().unwrap();
        let o: Vec<f32> = o.to_vec1().unwrap();
        let dot: f64 = r.iter().zip(&o).map(|(a, b)| *a as f64 * *b as f64).sum();
        let n = |v: &[f32]| v.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
        worst_cos = worst_cos.min(dot / (n(&r) * n(&o)));
        let top = |v: &[f32]| {
            v.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .unwrap()
                .0
        };
        same_top += usize::from(top(&r) == top(&o));
    }
    eprintln!("logit cosine ≥ {worst_cos:.5}; top-1 agrees at {same_top} of {t} positions");
    assert!(
        worst_cos > iterdeploy::tolerance::QUANTIZED_REFERENCE_COS,
        "logit cosine {worst_cos}"
    );
    assert!(
        same_top * 10 >= t * 9,
        "top-1 agrees at {same_top} of {t} positions"
    );
    // The teacher-forced log-likelihood is a proper log-probability.
    let targets = Tensor::new(&ids[1..], &device)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let lp = iterdeploy::policy::transformer::kernels::token_log_probs(
        &logits.narrow(1, 0, t - 1).unwrap(),
        &targets,
    )
    .unwrap();
    let lp: Vec<f32> = lp.flatten_all().unwrap().to_vec1().unwrap();
    assert!(lp.iter().all(|v| v.is_finite() && *v <= 0.0), "{lp:?}");
}

/// LoRA training on a tiny f64 decoder: every adapter tensor gets a
/// gradient, the frozen linear weights get none (the frozen matmul's
/// backward is the input's only), and the gradient of the completions'
/// log-likelihood in θ (and in the norm weights, whose backward candle's
/// fused norms would not give) equals a central finite difference.
#[test]
fn lora_gradients_reach_every_adapter_and_equal_finite_differences() {
    use candle_core::{DType, Var};
    use iterdeploy::pretrained::Config;
    use iterdeploy::pretrained::lora::{Adapted, Adapters, Mode};
    use iterdeploy::tolerance::{FD_ABS, FD_REL, FD_STEP};
    use rand_distr::{Distribution, StandardNormal};
    let device = Device::Cpu;
    let c = Config::llama(11, 8, 2, 4, 2, 12, 1e-5, 10_000.0, 16);
    let kv = c.kv_width();
    let mut shapes: Vec<(String, Vec<usize>)> = vec![
        ("token_embd.weight".into(), vec![c.vocab, c.d_model]),
        ("output_norm.weight".into(), vec![c.d_model]),
    ];
    for i in 0..c.layers {
        for (n, s) in [
            ("attn_norm", vec![c.d_model]),
            ("attn_q", vec![c.d_model, c.d_model]),
            ("attn_k", vec![kv, c.d_model]),
            ("attn_v", vec![kv, c.d_model]),
            ("attn_output", vec![c.d_model, c.d_model]),
            ("ffn_norm", vec![c.d_model]),
            ("ffn_gate", vec![c.d_ff, c.d_model]),
            ("ffn_up", vec![c.d_ff, c.d_model]),
            ("ffn_down", vec![c.d_model, c.d_ff]),
        ] {
            shapes.push((format!("blk.{i}.{n}.weight"), s));
        }
    }
    let mut rng = iterdeploy::rng::stream(7, 0);
    let mut normal = |scale: f64| -> f64 {
        let z: f64 = StandardNormal.sample(&mut rng);
        scale * z
    };
    let vars: Vec<(String, Var)> = shapes
        .iter()
        .map(|(n, s)| {
            let len: usize = s.iter().product();
            let norm = n.ends_with("norm.weight");
            let v: Vec<f64> = (0..len)
                .map(|_| if norm { 1.0 + normal(0.1) } else { normal(0.5) })
                .collect();
            let t = Tensor::from_vec(v, s.as_slice(), &device).unwrap();
            (n.clone(), Var::from_tensor(&t).unwrap())
        })
        .collect();
    let lora = iterdeploy::pretrained::LoraConfig {
        rank: 2,
        alpha: 4.0,
        dropout: 0.0,
    };
    // B ≠ 0, so A's gradient is not zero by construction.
    let theta: Vec<f64> = (0..lora.num_params(&c)).map(|_| normal(0.3)).collect();
    // Two rows: (prompt ++ completion, prompt length), weighted.
    let rows = vec![(vec![1u32, 4, 9, 2, 7, 3], 3), (vec![5, 5, 0, 10, 8], 2)];
    let weights = [0.7, -1.3];
    let loss_of = |vs: &[(String, Tensor)], theta: &[f64]| -> (Tensor, Adapters) {
        let w = vs.iter().cloned().collect();
        let m = Llama::from_weights(c.clone(), w, "test", &device).unwrap();
        let adapters =
            Adapters::from_flat(&c, lora, theta, (DType::F64, &device, Mode::Train)).unwrap();
        let mut ad = Adapted {
            adapters: &adapters,
            dropout: None,
        };
        let lp = m.completion_log_probs(&rows, 1.0, Some(&mut ad)).unwrap();
        assert_eq!(lp.dtype(), DType::F64);
        let w = Tensor::new(&weights[..], &device).unwrap();
        ((lp * w).unwrap().sum_all().unwrap(), adapters)
    };
    let current: Vec<(String, Tensor)> = vars
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    let (loss, adapters) = loss_of(&current, &theta);
    let grads = loss.backward().unwrap();
    assert_eq!(adapters.missing_grads(&grads), Vec::<String>::new());
    let mut g_theta = vec![0.0; theta.len()];
    adapters.add_flat_grads(&grads, &mut g_theta).unwrap();
    // Every adapter matrix has a nonzero gradient somewhere.
    let mut at = 0;
    for _ in 0..c.layers {
        for t in iterdeploy::pretrained::lora::TARGETS {
            let (i, o) = t.dims(&c);
            for len in [lora.rank * i, o * lora.rank] {
                assert!(
                    g_theta[at..at + len].iter().any(|v| *v != 0.0),
                    "{t:?}: zero gradient"
                );
                at += len;
            }
        }
    }
    // The frozen linear weights get none; the norm weights do.
    let frozen = [
        "attn_q",
        "attn_k",
        "attn_v",
        "attn_output",
        "ffn_gate",
        "ffn_up",
        "ffn_down",
    ];
    let is_frozen = |n: &str| frozen.iter().any(|f| n.contains(&format!(".{f}.")));
    for (n, v) in &vars {
        if is_frozen(n) {
            assert!(grads.get(v.as_tensor()).is_none(), "{n} got a gradient");
        }
    }
    // One random unit direction over θ and the norm weights.
    let free: Vec<usize> = (0..vars.len())
        .filter(|&k| vars[k].0.ends_with("norm.weight"))
        .collect();
    let mut d_theta: Vec<f64> = (0..theta.len()).map(|_| normal(1.0)).collect();
    let mut d_norms: Vec<Vec<f64>> = free
        .iter()
        .map(|&k| {
            (0..vars[k].1.as_tensor().elem_count())
                .map(|_| normal(1.0))
                .collect()
        })
        .collect();
    let norm = d_theta
        .iter()
        .chain(d_norms.iter().flatten())
        .map(|x| x * x)
        .sum::<f64>()
        .sqrt();
    d_theta.iter_mut().for_each(|x| *x /= norm);
    d_norms.iter_mut().flatten().for_each(|x| *x /= norm);
    let mut analytic: f64 = g_theta.iter().zip(&d_theta).map(|(a, b)| a * b).sum();
    for (&k, d) in free.iter().zip(&d_norms) {
        let (n, v) = &vars[k];
        let g = grads
            .get(v.as_tensor())
            .unwrap_or_else(|| panic!("no gradient reaches {n}"));
        let g: Vec<f64> = g.flatten_all().unwrap().to_vec1().unwrap();
        analytic += g.iter().zip(d).map(|(a, b)| a * b).sum::<f64>();
    }
    let shifted = |eps: f64| -> f64 {
        let mut vs = current.clone();
        for (&k, d) in free.iter().zip(&d_norms) {
            let t = &vs[k].1;
            let d = Tensor::from_vec(d.clone(), t.dims(), &device).unwrap();
            vs[k].1 = (t + (d * eps).unwrap()).unwrap();
        }
        let th: Vec<f64> = theta
            .iter()
            .zip(&d_theta)
            .map(|(a, d)| a + eps * d)
            .collect();
        loss_of(&vs, &th).0.to_scalar::<f64>().unwrap()
    };
    let numeric = (shifted(FD_STEP) - shifted(-FD_STEP)) / (2.0 * FD_STEP);
    approx::assert_relative_eq!(analytic, numeric, epsilon = FD_ABS, max_relative = FD_REL);
    // An untrained adapter (B = 0) is the base model exactly.
    let init = lora.init(&c, &mut iterdeploy::rng::stream(3, 0));
    let m = Llama::from_weights(
        c.clone(),
        current.iter().cloned().collect(),
        "test",
        &device,
    )
    .unwrap();
    let a0 = Adapters::from_flat(&c, lora, &init, (DType::F64, &device, Mode::Infer)).unwrap();
    let mut ad = Adapted {
        adapters: &a0,
        dropout: None,
    };
    let with: Vec<f64> = m
        .completion_log_probs(&rows, 1.0, Some(&mut ad))
        .unwrap()
        .to_vec1()
        .unwrap();
    let without: Vec<f64> = m
        .completion_log_probs(&rows, 1.0, None)
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(with, without);
}

/// The key/value cache changes nothing: a prefill (its last position's
/// logits) and then one token at a time gives the logits of one full
/// forward pass at those positions; and the sampler's
/// completions decode to text, each with a finite log-probability.
#[test]
fn cached_decoding_equals_the_full_pass_and_samples_are_text() {
    let Some(path) = model() else { return };
    let device = Device::Cpu;
    let g = Gguf::open(&path).unwrap();
    let tok = ChatTokenizer::from_gguf(&g).unwrap();
    let m = Llama::load(&g, &device).unwrap();
    let ids = tok
        .chat_prompt("You are a helpful assistant.", "Name a colour.")
        .unwrap();
    let full = m.forward(std::slice::from_ref(&ids)).unwrap();
    let split = ids.len() - 4;
    let mut cache = m.cache();
    let mut parts = vec![
        m.forward_cached(&[ids[..split].to_vec()], &mut cache, None)
            .unwrap(),
    ];
    for &id in &ids[split..] {
        parts.push(m.forward_cached(&[vec![id]], &mut cache, None).unwrap());
    }
    assert_eq!(cache.len(), ids.len());
    let cached = Tensor::cat(&parts, 1).unwrap();
    let full = full.narrow(1, split - 1, ids.len() - split + 1).unwrap();
    let gap: f32 = (full - cached)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    // f32 sums in another order: logits of size ~10 agree to ~1e-4.
    assert!(gap < 1e-3, "cached logits differ by {gap}");
    let sampling = iterdeploy::policy::transformer::sampling::Sampling {
        temperature: 0.6,
        top_k: None,
        top_p: None,
        max_new: 12,
    };
    let mut rngs: Vec<_> = (0..3).map(|i| iterdeploy::rng::stream(1, i)).collect();
    let done =
        pretrained::sample::complete(&m, None, &ids, tok.im_end, &sampling, &mut rngs).unwrap();
    assert_eq!(done.len(), 3);
    for c in &done {
        let text = tok.decode(&c.tokens).unwrap();
        eprintln!(
            "sample ({:.2} nats, stopped {}): {text:?}",
            c.log_prob, c.stopped
        );
        assert!(!c.tokens.is_empty() && c.tokens.len() <= 12);
        assert!(c.log_prob.is_finite() && c.log_prob <= 0.0);
    }
}

/// The model as a deployment policy: a prompt names the task's facts; a
/// planner's plan read back is valid and an edited one is not; a batch of
/// tasks sampled together gives each completion the log-probability the
/// teacher-forced score gives it; and one LoRA step on a completion raises
/// its log-likelihood.
#[test]
fn the_pretrained_policy_reads_samples_scores_and_learns() {
    use iterdeploy::generate::{DomainKind, Params, generate};
    use iterdeploy::mdp::Deployment;
    use iterdeploy::policy::Policy;
    use iterdeploy::pretrained::policy::{Settings, backbone, task_text};
    let Some(path) = model() else { return };
    let kind = DomainKind::Blocksworld;
    let domain = kind.parse_domain();
    let tasks = generate(
        kind,
        &mut Params::from_pairs(kind, &["blocks=3".to_string()]).unwrap(),
        2,
        9,
    )
    .unwrap();
    let problems: Vec<_> = tasks
        .iter()
        .map(|t| iterdeploy::pddl::parse_problem(t.pddl.as_bytes(), &t.name, &domain).unwrap())
        .collect();
    let env = Deployment::build(&domain, &problems, 8, 100_000).unwrap();
    let text = task_text(&env, 0);
    assert!(
        text.contains("Goal: (on") && text.contains("(unstack ?x ?y)"),
        "{text}"
    );
    let bb = backbone(&path).unwrap();
    let settings = Settings {
        lora: iterdeploy::pretrained::LoraConfig {
            rank: 4,
            alpha: 8.0,
            dropout: 0.0,
        },
        max_new_tokens: 24,
        top_k: None,
        top_p: None,
    };
    let theta = settings
        .lora
        .init(&bb.model.config, &mut iterdeploy::rng::stream(1, 0));
    let mut policy = iterdeploy::pretrained::Pretrained::new(
        bb,
        &env,
        settings,
        theta,
        0.6,
        iterdeploy::rng::stream(1, 1),
    )
    .unwrap();
    // A shortest plan, as the model would write it, is read back valid;
    // with its last step dropped it is not.
    let plans = iterdeploy::verify::shortest_plans(&env);
    let plan = plans.iter().max_by_key(|t| t.steps.len()).unwrap();
    assert!(plan.plan_length() >= 2, "{plan:?}");
    let tokens = policy.completion(&env, plan).unwrap();
    let read = policy.read(&env, plan.task, &tokens).unwrap();
    assert!(read.valid, "{:?}", policy.plan_text(&tokens));
    assert_eq!(read.steps, plan.steps);
    let mut short = plan.clone();
    short.steps.remove(short.steps.len() - 2);
    let t = policy.completion(&env, &short).unwrap();
    assert!(!policy.read(&env, short.task, &t).unwrap().valid);
    // Two tasks in one batch: each sample's log-probability is the score's.
    let mut requests: Vec<(usize, Vec<iterdeploy::rng::Rng>)> = (0..2)
        .map(|x| {
            (
                x,
                (0..2)
                    .map(|i| iterdeploy::rng::stream(5, 10 * x as u64 + i))
                    .collect(),
            )
        })
        .collect();
    let drawn = policy.sample_tasks(&env, &mut requests);
    assert_eq!(drawn.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2]);
    for (x, rows) in drawn.iter().enumerate() {
        for (trace, logp) in rows {
            assert_eq!(trace.task, x);
            let scored = policy.trace_log_prob(&env, trace);
            // f32 logits, summed in another order: agreement to 1e-3 nats
            // per token.
            let tol = 1e-3 * trace.tokens.len() as f64;
            assert!(
                (scored - logp).abs() <= tol,
                "task {x}: sampled {logp}, scored {scored}"
            );
        }
    }
    // One ascent step along the score raises log π of that completion.
    let before = policy.trace_log_prob(&env, plan);
    let mut g = vec![0.0; policy.num_params()];
    policy.accumulate_trace_scores(&env, &[(plan, 1.0)], &mut g);
    let norm = g.iter().map(|v| v * v).sum::<f64>().sqrt();
    assert!(norm > 0.0);
    for (p, gi) in policy.params_mut().iter_mut().zip(&g) {
        *p += 1e-3 * gi / norm;
    }
    let after = policy.trace_log_prob(&env, plan);
    assert!(after > before, "log π went from {before} to {after}");
}

/// A tiny Hugging Face directory written by the test: `config.json` of
/// `model_type` (with every key the three families' readers want),
/// random weights under the checkpoint's names in `model.safetensors`, and
/// a word-level `tokenizer.json` with the ChatML special tokens.
fn write_hf_dir(dir: &std::path::Path, model_type: &str, seed: u64) {
    use candle_core::DType;
    use rand_distr::{Distribution, StandardNormal};
    let (vocab, d, layers, heads, kv, ff) = (40usize, 16usize, 2usize, 4usize, 2usize, 24usize);
    // qwen3's heads are wider than d_model / heads, as in Qwen3 0.6B.
    let dh = if model_type == "qwen3" { 8 } else { d / heads };
    let tied = model_type != "llama";
    let config = serde_json::json!({
        "model_type": model_type,
        "vocab_size": vocab, "hidden_size": d, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv, "head_dim": dh,
        "intermediate_size": ff, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
        "max_position_embeddings": 64, "tie_word_embeddings": tied,
        "attention_bias": false, "hidden_act": "silu", "sliding_window": 64,
        "max_window_layers": layers, "use_sliding_window": false,
    });
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let mut rng = iterdeploy::rng::stream(seed, 0);
    let mut tensors = std::collections::HashMap::new();
    let mut put = |name: String, shape: &[usize], norm: bool| {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| {
                let z: f64 = StandardNormal.sample(&mut rng);
                (if norm { 1.0 + 0.1 * z } else { 0.4 * z }) as f32
            })
            .collect();
        let t = Tensor::from_vec(v, shape, &Device::Cpu).unwrap();
        tensors.insert(name, t.to_dtype(DType::BF16).unwrap());
    };
    put("model.embed_tokens.weight".into(), &[vocab, d], false);
    put("model.norm.weight".into(), &[d], true);
    if !tied {
        put("lm_head.weight".into(), &[vocab, d], false);
    }
    for i in 0..layers {
        let p = |s: &str| format!("model.layers.{i}.{s}");
        put(p("input_layernorm.weight"), &[d], true);
        put(p("post_attention_layernorm.weight"), &[d], true);
        put(p("self_attn.q_proj.weight"), &[heads * dh, d], false);
        put(p("self_attn.k_proj.weight"), &[kv * dh, d], false);
        put(p("self_attn.v_proj.weight"), &[kv * dh, d], false);
        put(p("self_attn.o_proj.weight"), &[d, heads * dh], false);
        put(p("mlp.gate_proj.weight"), &[ff, d], false);
        put(p("mlp.up_proj.weight"), &[ff, d], false);
        put(p("mlp.down_proj.weight"), &[d, ff], false);
        if model_type == "qwen2" {
            put(p("self_attn.q_proj.bias"), &[heads * dh], false);
            put(p("self_attn.k_proj.bias"), &[kv * dh], false);
            put(p("self_attn.v_proj.bias"), &[kv * dh], false);
        }
        if model_type == "qwen3" {
            put(p("self_attn.q_norm.weight"), &[dh], true);
            put(p("self_attn.k_norm.weight"), &[dh], true);
        }
    }
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    // Words 0..35, then the special tokens.
    use tokenizers::models::wordlevel::WordLevel;
    let mut words: std::collections::HashMap<String, u32> =
        (0..36u32).map(|i| (format!("w{i}"), i)).collect();
    words.insert("[UNK]".into(), 36);
    let model = WordLevel::builder()
        .vocab(words.into_iter().collect())
        .unk_token("[UNK]".into())
        .build()
        .unwrap();
    let mut tok = tokenizers::Tokenizer::new(model);
    tok.with_pre_tokenizer(Some(tokenizers::pre_tokenizers::whitespace::Whitespace {}));
    tok.add_special_tokens(vec![
        tokenizers::AddedToken::from("<|im_start|>", true),
        tokenizers::AddedToken::from("<|im_end|>", true),
    ])
    .unwrap();
    tok.save(dir.join("tokenizer.json"), false).unwrap();
}

/// One token of a reference model at a position: its logits.
type ReferenceStep = dyn FnMut(&Tensor, usize) -> Tensor;

/// A Hugging Face directory of each family (llama with its own output
/// matrix; qwen2 with q/k/v biases; qwen3 with per-head q/k norms and
/// heads wider than d_model / heads) is read into our decoder and gives,
/// at every position, the logits candle-transformers' model of that
/// family gives from the same files (its RoPE on halves, ours through
/// `RopePairs::Halves`). The tokenizer comes from `tokenizer.json`, chat
/// tokens by id.
#[test]
fn hugging_face_directories_of_llama_qwen2_and_qwen3_match_candle_transformers() {
    use candle_core::DType;
    use candle_transformers::models::{llama, qwen2, qwen3};
    let device = Device::Cpu;
    let root = std::env::temp_dir().join(format!("iterdeploy-hf-{}", std::process::id()));
    let ids: Vec<u32> = vec![3, 17, 0, 35, 8, 8, 21, 5];
    for (k, family) in ["llama", "qwen2", "qwen3"].into_iter().enumerate() {
        let dir = root.join(family);
        write_hf_dir(&dir, family, 11 + k as u64);
        let (tok, ours) = pretrained::load(&dir, &device).unwrap();
        assert_eq!((tok.im_start, tok.im_end), (37, 38), "{family}");
        let prompt = tok.chat_prompt("w1 w2", "w3").unwrap();
        assert_eq!(prompt[0], tok.im_start, "{family}");
        assert_eq!(prompt.iter().filter(|&&i| i == tok.im_end).count(), 2);
        let logits = ours.forward(std::slice::from_ref(&ids)).unwrap();
        let files = [dir.join("model.safetensors")];
        // SAFETY: the file was just written by this test and is not changed.
        let vb = unsafe {
            candle_nn::VarBuilder::from_mmaped_safetensors(&files, DType::F32, &device).unwrap()
        };
        let json = std::fs::read_to_string(dir.join("config.json")).unwrap();
        // The reference's logits at position p, one token at a time
        // through its own cache.
        let mut step: Box<ReferenceStep> = match family {
            "llama" => {
                let c: llama::LlamaConfig = serde_json::from_str(&json).unwrap();
                let c = c.into_config(false);
                let m = llama::Llama::load(vb, &c).unwrap();
                let mut cache = llama::Cache::new(true, DType::F32, &c, &device).unwrap();
                Box::new(move |x, p| m.forward(x, p, &mut cache).unwrap())
            }
            "qwen2" => {
                let c: qwen2::Config = serde_json::from_str(&json).unwrap();
                let mut m = qwen2::ModelForCausalLM::new(&c, vb).unwrap();
                Box::new(move |x, p| m.forward(x, p).unwrap())
            }
            _ => {
                let c: qwen3::Config = serde_json::from_str(&json).unwrap();
                let mut m = qwen3::ModelForCausalLM::new(&c, vb).unwrap();
                Box::new(move |x, p| m.forward(x, p).unwrap())
            }
        };
        let mut worst = 0f64;
        for (p, &id) in ids.iter().enumerate() {
            let x = Tensor::new(&[id], &device).unwrap().unsqueeze(0).unwrap();
            let r: Vec<f32> = step(&x, p).flatten_all().unwrap().to_vec1().unwrap();
            let o: Vec<f32> = logits.get(0).unwrap().get(p).unwrap().to_vec1().unwrap();
            assert_eq!(r.len(), o.len());
            for (a, b) in r.iter().zip(&o) {
                worst = worst.max((*a as f64 - *b as f64).abs());
            }
        }
        eprintln!("{family}: largest logit difference {worst:.2e}");
        assert!(
            worst < iterdeploy::tolerance::F32_REFERENCE_LOGITS,
            "{family}: logits differ by {worst}"
        );
    }
    let _ = std::fs::remove_dir_all(&root);
}

/// A directory the reader cannot run is refused with the file and the
/// reason: another family, a malformed config.json (its line), and a
/// weight the config does not declare (a llama checkpoint with q/k/v
/// biases but no `attention_bias`), which would otherwise be dropped.
#[test]
fn hugging_face_directories_it_cannot_run_are_refused_by_name() {
    let root = std::env::temp_dir().join(format!("iterdeploy-hf-bad-{}", std::process::id()));
    let dir = root.join("m");
    write_hf_dir(&dir, "qwen2", 3);
    let config = dir.join("config.json");
    let good = std::fs::read_to_string(&config).unwrap();
    let err = |text: &str| {
        std::fs::write(&config, text).unwrap();
        pretrained::load(&dir, &Device::Cpu)
            .err()
            .expect("refused")
            .to_string()
    };
    let e = err(&good.replace("\"qwen2\"", "\"mistral\""));
    assert!(
        e.contains("config.json") && e.contains("model_type `mistral`"),
        "{e}"
    );
    let e = err(&good.replace(",", ",\n")[..40]);
    assert!(e.contains("config.json") && e.contains("line"), "{e}");
    let e = err(&good.replace("\"qwen2\"", "\"llama\""));
    assert!(e.contains(".bias`") && e.contains("not used"), "{e}");
    let _ = std::fs::remove_dir_all(&root);
}

/// The error loading the model at `dir` gives (it must be refused).
fn load_err(dir: &std::path::Path) -> String {
    pretrained::load(dir, &Device::Cpu)
        .err()
        .expect("refused")
        .to_string()
}

/// A GGUF file written byte by byte, so a test can give it any header: its
/// metadata (key, GGUF value type, value bytes), then its tensors (name,
/// dims, ggml type, offset) and `data` after the header, padded to 32.
fn write_gguf(
    path: &std::path::Path,
    kvs: &[(&str, u32, Vec<u8>)],
    tensors: &[(&str, &[u64], u32, u64)],
    data: &[u8],
) {
    let string = |s: &str| {
        let mut b = (s.len() as u64).to_le_bytes().to_vec();
        b.extend(s.as_bytes());
        b
    };
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend((tensors.len() as u64).to_le_bytes());
    b.extend((kvs.len() as u64).to_le_bytes());
    for (k, t, v) in kvs {
        b.extend(string(k));
        b.extend(t.to_le_bytes());
        b.extend(v);
    }
    for (name, dims, ty, offset) in tensors {
        b.extend(string(name));
        b.extend((dims.len() as u32).to_le_bytes());
        for d in *dims {
            b.extend(d.to_le_bytes());
        }
        b.extend(ty.to_le_bytes());
        b.extend(offset.to_le_bytes());
    }
    while !b.len().is_multiple_of(32) {
        b.push(0);
    }
    b.extend(data);
    std::fs::write(path, b).unwrap();
}

/// GGUF metadata values: a string, a u32, an array of strings.
fn gguf_str(s: &str) -> (u32, Vec<u8>) {
    let mut b = (s.len() as u64).to_le_bytes().to_vec();
    b.extend(s.as_bytes());
    (8, b)
}
fn gguf_u32(v: u32) -> (u32, Vec<u8>) {
    (4, v.to_le_bytes().to_vec())
}
fn gguf_strings(items: &[&str]) -> (u32, Vec<u8>) {
    let mut b = 8u32.to_le_bytes().to_vec();
    b.extend((items.len() as u64).to_le_bytes());
    for s in items {
        b.extend(gguf_str(s).1);
    }
    (9, b)
}

/// GGUF files that once panicked or were read silently wrong are refused
/// with the file and the field (issue 27, item 2): alignment 0 (candle's
/// reader divides by it), alignments that are not multiples of 8, tensors
/// sharing bytes, a declared type that disagrees with the bytes its tensor
/// was given, a tensor past the end of the file, a token listed twice
/// (a second `<|im_end|>`) and no merges.
#[test]
fn gguf_files_that_once_panicked_or_misread_are_refused_by_name() {
    let dir = std::env::temp_dir().join(format!("iterdeploy-gguf-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.gguf");
    let arch = |kvs: &mut Vec<(&str, u32, Vec<u8>)>| {
        let (t, v) = gguf_str("llama");
        kvs.insert(0, ("general.architecture", t, v));
    };
    let open_err =
        |kvs: Vec<(&str, u32, Vec<u8>)>, tensors: &[(&str, &[u64], u32, u64)], data: &[u8]| {
            let mut kvs = kvs;
            arch(&mut kvs);
            write_gguf(&path, &kvs, tensors, data);
            Gguf::open(&path).err().expect("refused").to_string()
        };
    for a in [0u32, 1, 3] {
        let (t, v) = gguf_u32(a);
        let e = open_err(vec![("general.alignment", t, v)], &[], &[]);
        assert!(
            e.contains("m.gguf") && e.contains(&format!("general.alignment = {a}")),
            "{e}"
        );
    }
    // F32 is ggml type 0, F16 type 1.
    let data = vec![0u8; 256];
    let e = open_err(vec![], &[("a", &[8], 0, 0), ("b", &[8], 0, 0)], &data);
    assert!(e.contains("share bytes"), "{e}");
    // `a` is declared F16 [32] (64 bytes) but was given F32's 128.
    let e = open_err(vec![], &[("a", &[32], 1, 0), ("b", &[8], 0, 128)], &data);
    assert!(e.contains("tensor `b`") && e.contains("gap"), "{e}");
    let e = open_err(vec![], &[("a", &[128], 0, 0)], &data);
    assert!(
        e.contains("tensor `a`") && e.contains("past the end"),
        "{e}"
    );
    // The same layout laid out right opens.
    let mut kvs = vec![];
    arch(&mut kvs);
    write_gguf(
        &path,
        &kvs,
        &[("a", &[32], 1, 0), ("b", &[8], 0, 64)],
        &data,
    );
    Gguf::open(&path).unwrap();

    // Tokenizer tables: a token listed twice, and no merges.
    let tokenizer_err = |tokens: &[&str], merges: &[&str]| {
        let mut kvs = vec![];
        arch(&mut kvs);
        let (t, v) = gguf_str("gpt2");
        kvs.push(("tokenizer.ggml.model", t, v));
        let (t, v) = gguf_strings(tokens);
        kvs.push(("tokenizer.ggml.tokens", t, v));
        let (t, v) = gguf_strings(merges);
        kvs.push(("tokenizer.ggml.merges", t, v));
        write_gguf(&path, &kvs, &[], &[]);
        let g = Gguf::open(&path).unwrap();
        ChatTokenizer::from_gguf(&g)
            .err()
            .expect("refused")
            .to_string()
    };
    let tokens = ["a", "b", "ab", "<|im_start|>", "<|im_end|>"];
    let e = tokenizer_err(&[&tokens[..], &["<|im_end|>"]].concat(), &["a b"]);
    assert!(
        e.contains("`<|im_end|>` appears twice") && e.contains("ids 4 and 5"),
        "{e}"
    );
    let e = tokenizer_err(&tokens, &[]);
    assert!(e.contains("merges") && e.contains("empty"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Hugging Face directories that once panicked (exit 101) are refused by
/// the file and the field (issue 27, item 2): a layer count whose
/// allocation overflowed, heads × head size wrapping to 0, a 1-D
/// `lm_head`, `lm_head` rows other than the vocabulary, a tokenizer id
/// past the vocabulary, and integer weights read as floats.
#[test]
fn hugging_face_directories_that_once_panicked_are_refused_by_name() {
    use candle_core::DType;
    let root = std::env::temp_dir().join(format!("iterdeploy-hf-panic-{}", std::process::id()));
    let dir = root.join("m");
    write_hf_dir(&dir, "llama", 5);
    let config = dir.join("config.json");
    let good: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    let with = |key: &str, v: serde_json::Value| {
        let mut c = good.clone();
        c[key] = v;
        std::fs::write(&config, c.to_string()).unwrap();
    };
    with("num_hidden_layers", serde_json::json!(1u64 << 62));
    let e = load_err(&dir);
    assert!(e.contains("config.json") && e.contains("layers"), "{e}");
    let mut c = good.clone();
    c["num_attention_heads"] = serde_json::json!(1u64 << 32);
    c["num_key_value_heads"] = serde_json::json!(1u64 << 32);
    c["head_dim"] = serde_json::json!(1u64 << 32);
    std::fs::write(&config, c.to_string()).unwrap();
    let e = load_err(&dir);
    assert!(e.contains("config.json") && e.contains("heads"), "{e}");
    std::fs::write(&config, good.to_string()).unwrap();

    // lm_head of the wrong shape, and an I32 tensor.
    let weights = dir.join("model.safetensors");
    let original = candle_core::safetensors::load(&weights, &Device::Cpu).unwrap();
    let save_with = |name: &str, t: Tensor| {
        let mut w = original.clone();
        w.insert(name.to_string(), t);
        candle_core::safetensors::save(&w, &weights).unwrap();
    };
    save_with(
        "lm_head.weight",
        Tensor::zeros(40, DType::BF16, &Device::Cpu).unwrap(),
    );
    let e = load_err(&dir);
    assert!(
        e.contains("output.weight") && e.contains("shape [40]"),
        "{e}"
    );
    save_with(
        "lm_head.weight",
        Tensor::zeros((39, 16), DType::BF16, &Device::Cpu).unwrap(),
    );
    let e = load_err(&dir);
    assert!(e.contains("output.weight") && e.contains("[39, 16]"), "{e}");
    save_with(
        "lm_head.weight",
        Tensor::zeros((40, 16), DType::I32, &Device::Cpu).unwrap(),
    );
    let e = load_err(&dir);
    assert!(
        e.contains("lm_head.weight") && e.contains("not floating-point"),
        "{e}"
    );
    save_with("lm_head.weight", original["lm_head.weight"].clone());
    pretrained::load(&dir, &Device::Cpu).unwrap();

    // A tokenizer id past the 40 rows of the vocabulary.
    let tok_path = dir.join("tokenizer.json");
    let mut tok: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&tok_path).unwrap()).unwrap();
    tok["model"]["vocab"]["w35"] = serde_json::json!(45);
    std::fs::write(&tok_path, tok.to_string()).unwrap();
    let e = load_err(&dir);
    assert!(e.contains("tokenizer") && e.contains("40 rows"), "{e}");
    let _ = std::fs::remove_dir_all(&root);
}

/// No file of a Hugging Face directory is read past its bound: a shard
/// larger than the model's weights in f32 (plus 64 MiB) and a
/// `tokenizer.json` over 256 MiB are refused by name before they are
/// read. Both files are sparse, so the test writes almost nothing.
#[test]
fn hugging_face_directories_with_oversized_files_are_refused_before_reading() {
    let root = std::env::temp_dir().join(format!("iterdeploy-hf-big-{}", std::process::id()));
    let dir = root.join("m");
    write_hf_dir(&dir, "llama", 6);
    pretrained::load(&dir, &Device::Cpu).unwrap();

    // A second shard of 80 MiB: this model's weights in f32 are well under
    // 1 MiB, so its bound is about 64 MiB.
    let shard = dir.join("model-00002-of-00002.safetensors");
    std::fs::File::create(&shard)
        .unwrap()
        .set_len(80 << 20)
        .unwrap();
    let e = load_err(&dir);
    assert!(
        e.contains("model-00002-of-00002.safetensors")
            && e.contains("more than this model's weights can take in f32"),
        "{e}"
    );
    std::fs::remove_file(&shard).unwrap();
    pretrained::load(&dir, &Device::Cpu).unwrap();

    let tok = dir.join("tokenizer.json");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&tok)
        .unwrap()
        .set_len(iterdeploy::input::MAX_INPUT_BYTES + 1)
        .unwrap();
    let e = load_err(&dir);
    assert!(
        e.contains("tokenizer.json") && e.contains("larger than 256 MiB"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&root);
}
