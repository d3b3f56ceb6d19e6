"""PyTorch peer of `iterdeploy bench transformer`.

The same decoder as src/policy/transformer/model.rs -- token + position
embeddings, pre-norm blocks (causal multi-head attention without biases,
GELU (tanh) MLP), final layer norm, head without bias -- trained with the
same loss (teacher-forced next-token cross-entropy), AdamW and clipping, and
sampled with and without a key/value cache, on the same batch shapes.
Reads one JSON argument {"model": {...}, "work": {...}} and prints one JSON
object of tokens per second: {"train", "sample_cached", "sample_recompute"}.
"""

import json
import math
import sys
import time

import torch
import torch.nn.functional as F


class Decoder(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        d, f, v, t = m["d_model"], m["d_ff"], m["vocab"], m["max_len"]
        self.heads = m["heads"]
        self.tok = torch.nn.Parameter(torch.randn(v, d) * 0.02)
        self.pos = torch.nn.Parameter(torch.randn(t, d) * 0.02)
        self.layers = torch.nn.ModuleList()
        for _ in range(m["layers"]):
            layer = torch.nn.Module()
            layer.ln1 = torch.nn.LayerNorm(d, eps=1e-5)
            layer.qkv = torch.nn.ParameterList(
                [torch.nn.Parameter(torch.randn(d, d) * 0.02) for _ in range(4)]
            )
            layer.ln2 = torch.nn.LayerNorm(d, eps=1e-5)
            layer.w1 = torch.nn.Parameter(torch.randn(d, f) * 0.02)
            layer.b1 = torch.nn.Parameter(torch.zeros(f))
            layer.w2 = torch.nn.Parameter(torch.randn(f, d) * 0.02)
            layer.b2 = torch.nn.Parameter(torch.zeros(d))
            self.layers.append(layer)
        self.ln_f = torch.nn.LayerNorm(d, eps=1e-5)
        self.head = torch.nn.Parameter(torch.randn(d, v) * 0.02)

    def forward(self, tokens, start=0, cache=None):
        """tokens [B, T] at positions start..start+T; cache: per layer (k, v)
        of the earlier positions. Returns logits [B, T, V] and the new cache."""
        b, t = tokens.shape
        d = self.tok.shape[1]
        dh = d // self.heads
        x = self.tok[tokens] + self.pos[start : start + t]
        p = 0 if cache is None else cache[0][0].shape[2]
        i = torch.arange(t).unsqueeze(1)
        j = torch.arange(p + t).unsqueeze(0)
        mask = torch.where(j <= p + i, 0.0, -1e9)
        new_cache = []
        for l, layer in enumerate(self.layers):
            h = layer.ln1(x)
            wq, wk, wv, wo = layer.qkv
            split = lambda w: (h @ w).view(b, t, self.heads, dh).transpose(1, 2)
            q, k, v = split(wq), split(wk), split(wv)
            if cache is not None:
                pk, pv = cache[l]
                k = torch.cat([pk.expand(b, -1, -1, -1), k], 2)
                v = torch.cat([pv.expand(b, -1, -1, -1), v], 2)
            scores = q @ k.transpose(2, 3) / math.sqrt(dh) + mask
            att = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d)
            x = x + att @ wo
            h2 = layer.ln2(x)
            x = x + F.gelu(h2 @ layer.w1 + layer.b1, approximate="tanh") @ layer.w2 + layer.b2
            new_cache.append((k, v))
        return self.ln_f(x) @ self.head, new_cache


def draw(logits, top_k):
    values, ids = logits.topk(top_k, dim=-1)
    choice = torch.multinomial(values.softmax(-1), 1)
    return ids.gather(-1, choice)


def main():
    args = json.loads(sys.argv[1])
    m, w = args["model"], args["work"]
    torch.manual_seed(1)
    model = Decoder(m)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    tokens = torch.randint(0, m["vocab"], (w["train_batch"], w["train_seq"]))

    def train_step():
        logits, _ = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, m["vocab"]), tokens[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    for _ in range(2):
        train_step()
    start = time.perf_counter()
    for _ in range(w["train_steps"]):
        train_step()
    train = w["train_steps"] * w["train_batch"] * w["train_seq"] / (time.perf_counter() - start)

    prompt = torch.randint(0, m["vocab"], (1, w["prompt"]))

    @torch.inference_mode()
    def sample(batch, cached):
        logits, cache = model(prompt)
        out = draw(logits[:, -1].expand(batch, -1), w["top_k"])
        seq = torch.cat([prompt.expand(batch, -1), out], 1)
        for _ in range(w["new_tokens"] - 1):
            if cached:
                logits, cache = model(out, seq.shape[1] - 1, cache)
            else:
                logits, _ = model(seq)
            out = draw(logits[:, -1], w["top_k"])
            seq = torch.cat([seq, out], 1)
        return batch * w["new_tokens"]

    rates = {}
    # Cached sampling is timed over several batches in a row (one is too
    # short to time alone); uncached over one, as on our side.
    for name, cached, repeats in [
        ("sample_cached", True, w["cached_repeats"]),
        ("sample_recompute", False, 1),
    ]:
        sample(1, cached)
        start = time.perf_counter()
        n = sum(sample(w["sample_batch"], cached) for _ in range(repeats))
        rates[name] = n / (time.perf_counter() - start)
    isa = torch.backends.cpu.get_cpu_capability()
    print(json.dumps({"train": train, **rates, "isa": isa, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
