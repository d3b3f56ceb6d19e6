"""Peers of `iterdeploy bench pretrained` (see src/bench/pretrained.rs).

Usage: pretrained_peers.py llama-cpp|torch JSON

JSON: {"model": path of the GGUF file, "work": the workload,
       "prompts": [[ids], ...] (one per task),
       "rows": [[[ids], prompt_len], ...] (prompt + planner plan)}

llama-cpp: each prompt is evaluated once and its state saved; each of the
  N completions restores it and writes exactly `new_tokens` tokens at the
  workload's temperature (no stop token). Rate: generated tokens / time,
  prompt evaluation included.
torch: transformers reads the same GGUF (dequantized to f32), peft puts
  LoRA (r, alpha, dropout of the workload) on q/k/v/o/gate/up/down; one
  warm-up pass, then `train_epochs` passes over the rows, `train_rows` rows
  a step (right-padded, loss on the plan tokens only), Adam. Rate: real
  tokens of every row / time.

Prints one JSON object: {"sample": tokens/s} or {"train": tokens/s}, and
"note" (what ran, and on which instruction set).
"""

import json
import os
import sys
import time


def llama_cpp(args):
    import llama_cpp

    w = args["work"]
    llm = llama_cpp.Llama(
        model_path=args["model"],
        n_ctx=1024,
        n_batch=512,
        n_threads=os.cpu_count(),
        verbose=False,
    )
    # Warm-up: one prompt, a few tokens.
    llm.reset()
    llm.eval(args["prompts"][0])
    start = time.perf_counter()
    written = 0
    for prompt in args["prompts"]:
        llm.reset()
        llm.eval(prompt)
        state = llm.save_state()
        for _ in range(w["samples"]):
            llm.load_state(state)
            for _ in range(w["new_tokens"]):
                tok = llm.sample(temp=w["temperature"], top_k=0, top_p=1.0, min_p=0.0)
                llm.eval([tok])
                written += 1
    secs = time.perf_counter() - start
    info = llama_cpp.llama_print_system_info().decode()
    return {
        "sample": written / secs,
        "note": f"llama-cpp-python {llama_cpp.__version__}, Q4_1 kernels, rows one at a time; {info.strip()}",
    }


def torch_peft(args):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    w = args["work"]
    torch.manual_seed(1)
    path = args["model"]
    model = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32
    )
    model = get_peft_model(
        model,
        LoraConfig(
            r=w["lora_rank"],
            lora_alpha=w["lora_alpha"],
            lora_dropout=w["lora_dropout"],
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        ),
    )
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=w["learning_rate"])
    rows = args["rows"]

    def epoch():
        tokens = 0
        for i in range(0, len(rows), w["train_rows"]):
            chunk = rows[i : i + w["train_rows"]]
            width = max(len(ids) for ids, _ in chunk)
            ids = torch.zeros((len(chunk), width), dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            labels = torch.full((len(chunk), width), -100, dtype=torch.long)
            for r, (row, p) in enumerate(chunk):
                ids[r, : len(row)] = torch.tensor(row)
                mask[r, : len(row)] = 1
                labels[r, p : len(row)] = torch.tensor(row[p:])
                tokens += len(row)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        return tokens

    epoch()
    start = time.perf_counter()
    tokens = sum(epoch() for _ in range(w["train_epochs"]))
    secs = time.perf_counter() - start
    return {
        "train": tokens / secs,
        "note": f"torch {torch.__version__}, get_cpu_capability() = {torch.backends.cpu.get_cpu_capability()}, "
        f"{torch.get_num_threads()} threads, f32",
    }


def main():
    which, args = sys.argv[1], json.loads(sys.argv[2])
    out = {"llama-cpp": llama_cpp, "torch": torch_peft}[which](args)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
