//! `bench pretrained`: the pretrained model's two hot loops on a
//! generation's workload, beside the engines a user would otherwise run:
//!
//! * **sampling**: K task prompts, N completions each, of exactly
//!   `new_tokens` tokens (no stop, so both sides write the same number),
//!   at τ 0.6; ours prefills the K prompts together and decodes all K·N
//!   rows in one batch on f32 weights. The peer is llama.cpp
//!   (`llama-cpp-python`) on the same GGUF file, its own Q4_1 kernels:
//!   each prompt evaluated once, its state restored for each of the N
//!   completions, one row at a time (the Python binding's sampling API
//!   decodes one sequence).
//! * **LoRA training**: forward + backward + Adam on the planner plans of
//!   the same tasks (prompt + plan, loss on the plan), r 16, α 32,
//!   dropout 0.05 on all seven linear layers, 2 rows a pass. The peer is
//!   PyTorch + peft on the same GGUF read by transformers (dequantized to
//!   f32).
//!
//! Both sides get the same token ids (`peers/pretrained_peers.py` reads
//! them as JSON), so tokenisation is not timed. Rates are tokens per
//! second: generated tokens (prefill included in the time) for sampling,
//! every real token of every row for training.

use std::path::Path;
use std::time::Instant;

use crate::Result;
use crate::policy::Policy;

/// The workload both sides run.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct PretrainedWorkload {
    /// K: tasks (3-block Blocksworld), one prompt each.
    pub tasks: usize,
    /// N: completions per prompt.
    pub samples: usize,
    pub new_tokens: usize,
    pub temperature: f64,
    /// Passes of LoRA training over the tasks' plans (after one warm-up).
    pub train_epochs: usize,
    pub train_rows: usize,
    pub lora_rank: usize,
    pub lora_alpha: f64,
    pub lora_dropout: f64,
    pub learning_rate: f64,
}

pub const PRETRAINED_WORKLOAD: PretrainedWorkload = PretrainedWorkload {
    tasks: 4,
    samples: 8,
    new_tokens: 64,
    temperature: 0.6,
    train_epochs: 2,
    train_rows: 2,
    lora_rank: 16,
    lora_alpha: 32.0,
    lora_dropout: 0.05,
    learning_rate: 5e-4,
};

/// One side's rates, tokens per second.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct PretrainedRates {
    /// Sampling (a peer measuring only training leaves it 0).
    pub sample: f64,
    pub train: f64,
    /// What the side runs on (kernels, instruction set).
    pub note: String,
}

/// The tasks, prompts and training rows of the workload, from the shipped
/// pretrained spec's task generator (3 blocks, seed 2026).
struct Inputs {
    work: crate::deploy::Workload,
    policy: crate::pretrained::Pretrained,
    plans: Vec<crate::estimator::Trace>,
}

fn inputs(model: &Path, w: &PretrainedWorkload) -> Result<Inputs> {
    let policy = format!(
        "kind = \"pretrained\"\nmodel = \"{}\"\nlora_rank = {}\nlora_alpha = {}\nlora_dropout = {}\nmax_new_tokens = {}",
        model.display(),
        w.lora_rank,
        w.lora_alpha,
        w.lora_dropout,
        w.new_tokens
    );
    let spec = three_block_spec("bench-pretrained", w.tasks, &policy);
    let r = crate::experiment::Resolved::parse(&spec, "bench pretrained")?;
    let (work, _) = crate::experiment::build_workload(&r.spec)?;
    let settings = r.spec.policy.pretrained_settings();
    let backbone = crate::pretrained::policy::backbone(model)?;
    let theta = settings
        .lora
        .init(&backbone.model.config, &mut crate::rng::stream(1, 0));
    let policy = crate::pretrained::Pretrained::new(
        backbone,
        &work.env,
        settings,
        theta,
        w.temperature,
        crate::rng::stream(1, 1),
    )?;
    let plans = crate::verify::shortest_plans(&work.env);
    Ok(Inputs {
        work,
        policy,
        plans,
    })
}

/// A one-arm spec deploying the first `k` nontrivial 3-block tasks of the
/// shipped pretrained spec's generator (seed 2026) with the `[policy]`
/// body `policy`: the tasks both pretrained benches run.
pub(super) fn three_block_spec(id: &str, k: usize, policy: &str) -> String {
    format!(
        r#"
id = "{id}"
title = "t"
question = "q"
seeds = [1]
[tasks]
domain = "blocksworld"
horizon = 16
seed = 2026
nontrivial = true
[[tasks.buckets]]
name = "3 blocks"
count = {k}
params = {{ blocks = 3 }}
[policy]
{policy}
[base]
buckets = []
tasks = 0
seed = 1
epochs = 0
learning_rate = 0.001
[deployment.defaults]
generations = 1
[[deployment.arms]]
name = "a"
method = "curated-sft"
"#
    )
}

/// The benches' sampling generators: row i of prompt x draws from stream
/// x·samples + i of seed 7.
pub(super) fn row_streams(prompts: usize, samples: usize) -> Vec<Vec<crate::rng::Rng>> {
    (0..prompts)
        .map(|x| {
            (0..samples)
                .map(|i| crate::rng::stream(7, (x * samples + i) as u64))
                .collect()
        })
        .collect()
}

/// Our side: the policy's own batched sampler and training path.
fn ours(inp: &Inputs, w: &PretrainedWorkload) -> Result<PretrainedRates> {
    use crate::policy::transformer::sampling::Sampling;
    let sampling = Sampling {
        temperature: w.temperature,
        top_k: None,
        top_p: None,
        max_new: w.new_tokens,
    };
    let adapters = inp.policy.adapters()?;
    let model = &inp.policy.backbone().model;
    let mut rngs = row_streams(w.tasks, w.samples);
    let mut asks: Vec<(&[u32], &mut [crate::rng::Rng])> = rngs
        .iter_mut()
        .enumerate()
        .map(|(x, r)| (inp.policy.prompt(x), r.as_mut_slice()))
        .collect();
    let start = Instant::now();
    // No stop token (u32::MAX is no id): every row writes new_tokens.
    let done = crate::pretrained::sample::complete_many(
        model,
        Some(&adapters),
        &mut asks,
        u32::MAX,
        &sampling,
    )?;
    let secs = start.elapsed().as_secs_f64();
    let written: usize = done.iter().flatten().map(|c| c.tokens.len()).sum();
    let sample = written as f64 / secs;

    let env = &inp.work.env;
    let mut policy = inp.policy.clone();
    let mut opt =
        crate::optim::Optimizer::new(crate::optim::OptimizerKind::Adam, w.learning_rate, None);
    let step = |policy: &mut crate::pretrained::Pretrained,
                opt: &mut crate::optim::Optimizer|
     -> usize {
        let mut tokens = 0;
        for chunk in inp.plans.chunks(w.train_rows) {
            let weighted: Vec<(&crate::estimator::Trace, f64)> = chunk
                .iter()
                .map(|t| (t, 1.0 / chunk.len() as f64))
                .collect();
            let mut g = vec![0.0; policy.num_params()];
            policy.accumulate_trace_scores(env, &weighted, &mut g);
            opt.ascend(policy.params_mut(), &g);
            tokens += chunk
                .iter()
                .map(|t| {
                    policy.prompt(t.task).len() + policy.completion(env, t).map_or(0, |c| c.len())
                })
                .sum::<usize>();
        }
        tokens
    };
    step(&mut policy, &mut opt); // warm-up
    let start = Instant::now();
    let mut tokens = 0;
    for _ in 0..w.train_epochs {
        tokens += step(&mut policy, &mut opt);
    }
    let train = tokens as f64 / start.elapsed().as_secs_f64();
    Ok(PretrainedRates {
        sample,
        train,
        note: format!("candle, f32 weights, {}", crate::bench::our_isa()),
    })
}

/// The peers' inputs: the same ids.
fn peer_args(model: &Path, inp: &Inputs, w: &PretrainedWorkload) -> Result<serde_json::Value> {
    let env = &inp.work.env;
    let prompts: Vec<&[u32]> = (0..w.tasks).map(|x| inp.policy.prompt(x)).collect();
    let rows = inp
        .plans
        .iter()
        .map(|t| {
            let p = inp.policy.prompt(t.task);
            let mut ids = p.to_vec();
            ids.extend(inp.policy.completion(env, t)?);
            Ok((ids, p.len()))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(serde_json::json!({
        "model": model,
        "work": w,
        "prompts": prompts,
        "rows": rows,
    }))
}

fn run_peer(python: &Path, which: &str, args: &serde_json::Value) -> Result<PretrainedRates> {
    super::run_peer_script(python, "pretrained_peers.py", &[which, &args.to_string()])
}

/// Rounds, alternating ours and the peers; medians of rates and of
/// same-round ratios.
pub const PRETRAINED_ROUNDS: usize = 3;

/// `bench pretrained` (module docs). Without `peer_python`, ours alone.
pub fn pretrained_throughput(model: &Path, peer_python: Option<&Path>) -> Result<()> {
    use crate::stats::median;
    let w = PRETRAINED_WORKLOAD;
    let inp = inputs(model, &w)?;
    let prompt_lens: Vec<usize> = (0..w.tasks).map(|x| inp.policy.prompt(x).len()).collect();
    println!(
        "model: {}; {} prompts of {:?} tokens, {} completions each of {} tokens at τ {}; \
         LoRA r {} α {} dropout {} on 7 linear layers, {} epochs over {} plans, {} rows a pass, Adam; \
         {} alternating rounds, medians",
        model.display(),
        w.tasks,
        prompt_lens,
        w.samples,
        w.new_tokens,
        w.temperature,
        w.lora_rank,
        w.lora_alpha,
        w.lora_dropout,
        w.train_epochs,
        inp.plans.len(),
        w.train_rows,
        PRETRAINED_ROUNDS
    );
    println!("CPU: {}", crate::bench::cpu_model());
    let args = peer_args(model, &inp, &w)?;
    // Each peer on its own: one that fails (its error printed once, with
    // the signal it died of) leaves the other measured.
    let mut failed = [false; 2];
    let mut peer = |py: &Path, which: &str, i: usize| -> Option<PretrainedRates> {
        if failed[i] {
            return None;
        }
        match run_peer(py, which, &args) {
            Ok(r) => Some(r),
            Err(e) => {
                eprintln!("peer {which} not measured: {e}");
                failed[i] = true;
                None
            }
        }
    };
    let mut rounds: Vec<Round> = Vec::new();
    for _ in 0..PRETRAINED_ROUNDS {
        let o = ours(&inp, &w)?;
        let (llama, torch) = match peer_python {
            Some(py) => (peer(py, "llama-cpp", 0), peer(py, "torch", 1)),
            None => (None, None),
        };
        rounds.push(Round {
            ours: o,
            llama,
            torch,
        });
    }
    println!("iterdeploy: {}", rounds[0].ours.note);
    if let Some(l) = rounds.iter().find_map(|r| r.llama.as_ref()) {
        println!("llama.cpp: {}", l.note);
    }
    if let Some(t) = rounds.iter().find_map(|r| r.torch.as_ref()) {
        println!("PyTorch + peft: {}", t.note);
    }
    println!(
        "| measure | iterdeploy tokens/s | peer | peer tokens/s | iterdeploy / peer | ratio per round |"
    );
    println!("|---|---|---|---|---|---|");
    // pick: the measure of one side; peer_of: which peer it is compared with.
    let row = |name: &str,
               peer: &str,
               pick: fn(&PretrainedRates) -> f64,
               peer_of: fn(&Round) -> Option<&PretrainedRates>| {
        let ours = median(rounds.iter().map(|r| pick(&r.ours)).collect());
        let pairs: Vec<(f64, f64)> = rounds
            .iter()
            .filter_map(|r| peer_of(r).map(|p| (pick(&r.ours), pick(p))))
            .collect();
        match super::round_ratios(&pairs) {
            None => println!("| {name} | {ours:.1} | {peer} | — | — | — |"),
            Some(r) => println!(
                "| {name} | {ours:.1} | {peer} | {:.1} | {:.2} | {} |",
                r.peer, r.ratio, r.list
            ),
        }
    };
    row(
        "sampling (prefill + K·N rows)",
        "llama.cpp",
        |r| r.sample,
        |r| r.llama.as_ref(),
    );
    row(
        "LoRA training (fwd + bwd + Adam)",
        "PyTorch + peft",
        |r| r.train,
        |r| r.torch.as_ref(),
    );
    Ok(())
}

/// One round of `bench pretrained`: ours, and each peer where it ran.
struct Round {
    ours: PretrainedRates,
    llama: Option<PretrainedRates>,
    torch: Option<PretrainedRates>,
}
