"""PyTorch eager peer of one ner-edge meta-training step (issue 4), for a speed comparison.

usage: pytorch_step.py [--device cuda|cpu] [--steps N] [--warmup W] [--episodes-per-step 16]
                       [--batching per-episode|per-step|per-step-sorted|both|all] [--buckets 4]
                       [--attention sdpa|manual] [--threads T] [--tiny] [--seed S] [--json OUT]

  GPU:  python3 tools/peers/pytorch_step.py --device cuda --steps 10 --warmup 3 --batching all \
            --json pytorch_step.jsonl
  CPU smoke test (one core): taskset -c 1 python3 tools/peers/pytorch_step.py --device cpu \
            --threads 1 --steps 3 --warmup 1      (add --tiny for a seconds-long run)

Times whole optimiser steps of the same model and the same loss as `ner-train meta`
(trainer/src/train/{meta,step,optimizer}.rs, trainer/src/loss/, trainer/src/backprop/model.rs),
written the way a PyTorch user would (nn.Module + autograd + torch.optim.AdamW), and prints one
JSON line and one human line per batching mode. Random weights (seeded), synthetic token ids: no
weights, tokenizer or data are needed. fp32 throughout, TF32 off (matmul and cuDNN), so it runs
the same arithmetic as our f32 kernels. Every step is timed from a device synchronise to a device
synchronise; the figure reported is the median over the timed steps, after the warm-up steps.

Model (MiniLM-L6 shape: vocab 30,522, D 384, 6 layers, 12 heads, FFN 1536, 512 positions, type
head 128; `--tiny` shrinks it for smoke tests): word + position + token-type(0) embeddings, LN
(eps 1e-12), 6 post-LN layers [Q, K, V, softmax(QK^T/sqrt(dh)) V with a key-padding mask, output
projection, residual + LN, FFN D->4D exact (erf) GELU ->D, residual + LN], then the boundary head
(linear D->3, O/B/I) and the type head (linear D->128) on every piece. Word-level outputs are the
rows of each word's first piece, as in step.rs `gather_words`.

Episode loss (trainer/src/loss/episode.rs), per episode:
  s_k    = mean type vector of the support words tagged B-k/I-k                (prototypes)
  m_k    = mapped-memory mean from OT retrieval (constant, no gradient)
  mu_k   = 0.5 * fc2(relu(fc1([s_k; m_k]))) + 0.5 * s_k                       (prior MLP, gamma 0.5)
  emissions on the query: log P(O) = lsm(boundary)[O], log P(B-k) = lsm(boundary)[B] +
           lsm_k(types . mu)[k], log P(I-k) likewise
  crf    = mean over query sentences of the CRF NLL (forward algorithm, log space) with the 21 CDT
           numbers unfolded to the episode's label set and hard BIO constraints
  span   = mean over all support + query words of -lsm(boundary)[gold O/B/I]
  type   = mean over query entity words of -lsm_k(types . mu)[gold type]
  kl     = mean over types of 0.5 * ||post_k - mu_k||^2 (post = support+query mean), weight 1e-3
The step's gradient is the mean over its episodes (16); then global-norm clipping at 1.0 and AdamW
(betas 0.9/0.999, eps 1e-8, weight decay 0.01 except biases, LN and CDT) with lr 1e-4 for the
encoder and 1e-3 for the heads (boundary, types, CDT, prior MLP), all 22.7 M parameters updated
every step (dense embedding gradients, like the Rust trainer). Then the entity vectors of every
episode type are pushed into the FIFO label memory (capacity 15 per slot).

Simplified against the Rust step (none of it changes the work of the encoder, which is >95% of
the Rust step's time, see benches/RESULTS.md):
  * OT memory retrieval: batched Sinkhorn (eps 0.1, cost / its max, uniform marginals, slot with
    the smallest <C,T>, barycentric map, f64 like the Rust) over *every* slot of a pre-filled
    memory (223 slots x 15 rows, the slot count of configs/cross-domain.toml, own slot excluded),
    with a fixed `--sinkhorn-iters` (default 100) instead of "up to 1000, stop at marginal error
    1e-9 checked every 10" (a convergence check would need a host sync per check). No gradient
    flows through it, as in the Rust. The memory is pre-filled with random vectors (the steady
    state of a run) instead of starting empty; pushes are a ring buffer (same contents as FIFO,
    another row order, which OT with uniform marginals does not see).
  * Episodes are synthetic: N-way K-shot from configs/cross-domain.toml (n_way 5/4/5, k_shot
    1/1/2, query_k 1, cycled as meta.rs `step_episodes` does), with sentence counts and sentence
    lengths in pieces drawn from the distributions measured by replaying the Rust sampler
    (episodes.rs greedy K~2K fill) over the configured corpora with the MiniLM vocabulary
    (sentences <= 96 pieces + [CLS]/[SEP]): about 4.3/3.5/7.4 support and 4.3/3.6/4.3 query
    sentences per episode, median 24 pieces per sentence, 3,200-5,500 pieces per step (median
    about 4,450; benches/RESULTS.md measured 3,400-4,700 for the real step). About 0.9 words per
    piece; entities of 1-3 words, k..2k mentions per type in the support, q..2q in the query.
  * The loss is computed in f32 on the device (the Rust widens the word-level head outputs to
    f64 on the CPU); `--loss-f64` widens as the Rust does. Forbidden CRF transitions are -1e4
    instead of -inf (identical in f32; it keeps masked label columns free of NaN gradients).
  * The learning-rate schedule is left at factor 1 (as benches train-step does), and the
    gradient norm is not checked for finiteness (that would cost a host sync per step).
  * Batching modes. "per-episode": one padded encoder call, loss and backward per episode,
    gradients accumulated over the 16 episodes (the obvious eager port of step.rs). "per-step":
    every sentence of the 16 episodes in one padded encoder call and one loss over all episodes
    (label sets padded to the widest episode, absent types masked out), one backward.
    "per-step-sorted": as per-step, but the sentences sorted by length and cut into `--buckets`
    encoder calls (less padding). "both" runs the first two, "all" all three; the fair
    comparison is the fastest. The Rust packs sentences back to back without padding; here each
    sentence is padded to the longest one of its encoder call ("padded_tokens_per_step" vs
    "pieces_per_step"). All modes compute the same loss (same seeds: same loss values).
"""

import argparse
import json
import math
import os
import platform
import random
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

NEG = -1.0e4  # "minus infinity" for masked CRF transitions and absent types

# ---------------------------------------------------------------------------------------------
# Episode shapes, measured by replaying the Rust sampler (trainer/src/episodes.rs, greedy K~2K
# fill, uniform over sources) over the corpora of configs/cross-domain.toml, tokenised with
# fixtures/minilm/vocab.txt, 2,400 episodes. Counts of (sentences, episodes) per (n, k, q).
# ---------------------------------------------------------------------------------------------
EPISODE_CONFIGS = [(5, 1, 1), (4, 1, 1), (5, 2, 1)]  # configs/cross-domain.toml [episodes]
SUPPORT_COUNTS = {
    (5, 1, 1): [(2, 12), (3, 98), (4, 356), (5, 434)],
    (4, 1, 1): [(2, 32), (3, 269), (4, 449)],
    (5, 2, 1): [(3, 4), (4, 25), (5, 89), (6, 129), (7, 152), (8, 136), (9, 101), (10, 114)],
}
QUERY_COUNTS = {
    (5, 1, 1): [(1, 1), (2, 16), (3, 110), (4, 351), (5, 422)],
    (4, 1, 1): [(1, 1), (2, 40), (3, 243), (4, 466)],
    (5, 2, 1): [(2, 10), (3, 101), (4, 299), (5, 340)],
}
# Pieces per sentence including [CLS] and [SEP]: the 0%, 5%, ..., 100% quantiles.
PIECE_QUANTILES = [4, 9, 10, 12, 13, 14, 16, 18, 20, 22, 25, 28, 31, 35, 39, 43, 46, 51, 58, 69, 98]
WORD_START_P = 0.9  # fraction of inner pieces that start a word (0.87-0.91 measured)
# Entity types per source corpus (the label-memory slots): crossner ai/literature/music/
# politics/science, mit-movie eng/trivia, mit-restaurant, atis, snips, twitter2015/2017.
SOURCE_TYPES = [14, 12, 13, 9, 17, 12, 12, 8, 79, 39, 4, 4]
CLS_ID, SEP_ID = 101, 102


def minilm_shape():
    return dict(vocab=30522, hidden=384, layers=6, heads=12, intermediate=1536, positions=512,
                type_dim=128, ln_eps=1e-12)


def tiny_shape():
    return dict(vocab=1000, hidden=64, layers=2, heads=4, intermediate=256, positions=128,
                type_dim=32, ln_eps=1e-12)


# ---------------------------------------------------------------------------------------------
# Synthetic episodes
# ---------------------------------------------------------------------------------------------
def draw(rng, table):
    total = sum(w for _, w in table)
    r = rng.randrange(total)
    for v, w in table:
        if r < w:
            return v
        r -= w
    return table[-1][0]


def draw_pieces(rng, max_pieces):
    q = PIECE_QUANTILES
    u = rng.random() * (len(q) - 1)
    i = min(int(u), len(q) - 2)
    v = q[i] + (q[i + 1] - q[i]) * (u - i)
    return max(3, min(int(round(v)), max_pieces + 2))


def make_sentences(rng, count, n_types, per_type, shape, max_pieces):
    """`count` sentences; each type gets per_type..2*per_type mentions, every sentence >= 1."""
    sents = []
    for _ in range(count):
        t = draw_pieces(rng, max_pieces)
        ids = [CLS_ID] + [rng.randrange(1000, shape["vocab"]) if shape["vocab"] > 2000
                          else rng.randrange(200, shape["vocab"]) for _ in range(t - 2)] + [SEP_ID]
        first = [1] + [p for p in range(2, t - 1) if rng.random() < WORD_START_P]
        sents.append({"ids": ids, "first_piece": first, "labels": [0] * len(first)})
    mentions = []
    for k in range(n_types):
        extra = rng.randrange(per_type + 1) if rng.random() < 0.3 else 0
        mentions += [k] * (per_type + extra)
    rng.shuffle(mentions)
    # the first `count` mentions go one per sentence, so that every sentence helps (greedy fill)
    order = list(range(count)) + [rng.randrange(count) for _ in range(len(mentions) - count)]
    for k, want in zip(mentions, order):
        cands = [want] + sorted(range(count), key=lambda i: -len(sents[i]["labels"]))
        for si in cands:
            lab = sents[si]["labels"]
            length = rng.choice([1, 1, 1, 2, 2, 3])
            placed = False
            while length >= 1 and not placed:
                starts = [s for s in range(len(lab) - length + 1)
                          if all(x == 0 for x in lab[s:s + length])
                          and (s + length == len(lab) or lab[s + length] % 2 == 1 or lab[s + length] == 0)]
                if starts:
                    s = rng.choice(starts)
                    lab[s] = 1 + 2 * k
                    for j in range(s + 1, s + length):
                        lab[j] = 2 + 2 * k
                    placed = True
                length -= 1
            if placed:
                break
    return sents


def make_episode(rng, cfg, shape, max_pieces):
    n, k, q = cfg
    eligible = [s for s, c in enumerate(SOURCE_TYPES) if c >= n]
    source = rng.choice(eligible)
    types = sorted(rng.sample(range(SOURCE_TYPES[source]), n))
    support = make_sentences(rng, draw(rng, SUPPORT_COUNTS[cfg]), n, k, shape, max_pieces)
    query = make_sentences(rng, draw(rng, QUERY_COUNTS[cfg]), n, q, shape, max_pieces)
    slot_base = sum(SOURCE_TYPES[:source])
    return {"n": n, "slots": [slot_base + t for t in types], "support": support, "query": query}


def step_episodes(seed, step, count, shape, max_pieces):
    rng = random.Random(seed * 1_000_003 + step)
    return [make_episode(rng, EPISODE_CONFIGS[i % len(EPISODE_CONFIGS)], shape, max_pieces)
            for i in range(count)]


def check_bio(labels, n):
    prev = 0
    for y in labels:
        assert 0 <= y < 1 + 2 * n
        if y != 0 and y % 2 == 0:  # I-k
            assert prev in (y - 1, y), labels
        prev = y


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------
class Layer(nn.Module):
    def __init__(self, c, attention):
        super().__init__()
        d, i = c["hidden"], c["intermediate"]
        self.heads = c["heads"]
        self.attention = attention
        self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.attn_output = nn.Linear(d, d)
        self.attn_ln = nn.LayerNorm(d, eps=c["ln_eps"])
        self.ffn_in, self.ffn_out = nn.Linear(d, i), nn.Linear(i, d)
        self.ffn_ln = nn.LayerNorm(d, eps=c["ln_eps"])

    def forward(self, x, keep, additive):
        b, t, d = x.shape
        h = self.heads
        dh = d // h

        def split(y):
            return y.view(b, t, h, dh).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        if self.attention == "sdpa":
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        else:
            scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(dh)) + additive
            ctx = torch.matmul(torch.softmax(scores, dim=-1), v)
        ctx = ctx.transpose(1, 2).reshape(b, t, d)
        h1 = self.attn_ln(self.attn_output(ctx) + x)
        return self.ffn_ln(self.ffn_out(F.gelu(self.ffn_in(h1))) + h1)


class Encoder(nn.Module):
    def __init__(self, c, attention):
        super().__init__()
        d = c["hidden"]
        self.word = nn.Embedding(c["vocab"], d)
        self.position = nn.Embedding(c["positions"], d)
        self.token_type = nn.Parameter(torch.zeros(d))  # one row: the model always uses type 0
        self.embeddings_ln = nn.LayerNorm(d, eps=c["ln_eps"])
        self.layers = nn.ModuleList(Layer(c, attention) for _ in range(c["layers"]))
        self.boundary = nn.Linear(d, 3)
        self.types = nn.Linear(d, c["type_dim"])

    def forward(self, ids, lengths):
        b, t = ids.shape
        pos = torch.arange(t, device=ids.device)
        keep = pos[None, :] < lengths[:, None]  # [B, T] real pieces
        x = self.word(ids) + self.position(pos)[None] + self.token_type
        x = self.embeddings_ln(x)
        keep4 = keep[:, None, None, :]
        additive = torch.zeros(keep4.shape, device=ids.device, dtype=x.dtype).masked_fill(
            ~keep4, float("-inf"))
        for layer in self.layers:
            x = layer(x, keep4, additive)
        return self.boundary(x), self.types(x)


class Heads(nn.Module):
    """CDT numbers (3x5 matrix, start, end) and the prior MLP, as in loss/heads.rs."""

    def __init__(self, dim, gen):
        super().__init__()
        self.cdt_matrix = nn.Parameter(torch.zeros(3, 5))
        self.cdt_start = nn.Parameter(torch.zeros(3))
        self.cdt_end = nn.Parameter(torch.zeros(3))
        self.fc1 = nn.Linear(2 * dim, dim)
        self.fc2 = nn.Linear(dim, dim)
        with torch.no_grad():  # PriorParams::init: MLP([s; m]) ~ m, every hidden unit active
            self.fc1.weight.copy_(torch.randn(dim, 2 * dim, generator=gen) * 0.01)
            self.fc1.weight[:, dim:] += torch.eye(dim)
            self.fc1.bias.fill_(1.0)
            self.fc2.weight.copy_(torch.randn(dim, dim, generator=gen) * 0.01 + torch.eye(dim))
            self.fc2.bias.fill_(-1.0)


def init_encoder(enc, gen):
    with torch.no_grad():
        for name, p in enc.named_parameters():
            if name.endswith("_ln.weight") or ".attn_ln.weight" in name or ".ffn_ln.weight" in name:
                p.fill_(1.0)
            elif name.endswith(".bias"):
                p.zero_()
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)


def unfold_index(n_types):
    """Flat index into [matrix(15) | start(3) | end(3)] for every dense transition, start and
    end of `n_types` types, and the BIO-forbidden masks (runtime/src/decode/cdt.rs `unfold`)."""
    L = 1 + 2 * n_types

    def kind(i):
        return 0 if i == 0 else (1 if i % 2 == 1 else 2)

    def typ(i):
        return None if i == 0 else (i - 1) // 2

    trans_idx, forbid = [], []
    for f in range(L):
        for t in range(L):
            kf, kt = kind(f), kind(t)
            same = typ(f) == typ(t)
            if kt == 0:
                col = 0
            elif kf == 0:
                col = kt  # O -> B (1) or O -> I (2)
            elif same:
                col = kt
            else:
                col = kt + 2  # B' (3) or I' (4)
            trans_idx.append(5 * kf + col)
            forbid.append(kt == 2 and not (kf != 0 and same))
    start_idx = [15 + kind(i) for i in range(L)]
    end_idx = [18 + kind(i) for i in range(L)]
    start_forbid = [kind(i) == 2 for i in range(L)]
    return trans_idx, forbid, start_idx, end_idx, start_forbid


class Transitions:
    def __init__(self, n_types, device):
        ti, fb, si, ei, sf = unfold_index(n_types)
        L = 1 + 2 * n_types
        self.L = L
        self.trans_idx = torch.tensor(ti, device=device).view(L, L)
        self.forbid = torch.tensor(fb, device=device).view(L, L)
        self.start_idx = torch.tensor(si, device=device)
        self.end_idx = torch.tensor(ei, device=device)
        self.start_forbid = torch.tensor(sf, device=device)

    def unfold(self, heads):
        flat = torch.cat([heads.cdt_matrix.reshape(-1), heads.cdt_start, heads.cdt_end])
        trans = flat[self.trans_idx].masked_fill(self.forbid, NEG)
        start = flat[self.start_idx].masked_fill(self.start_forbid, NEG)
        end = flat[self.end_idx]
        return trans, start, end


# ---------------------------------------------------------------------------------------------
# A batch of episodes, as index tensors
# ---------------------------------------------------------------------------------------------
class Batch:
    """Every sentence of `episodes` padded into one encoder call, plus what the loss needs."""

    def __init__(self, episodes, n_max, device, non_blocking, buckets=1):
        sents, ep_of, is_query = [], [], []
        for e, ep in enumerate(episodes):
            for s in ep["support"]:
                sents.append(s), ep_of.append(e), is_query.append(False)
            for s in ep["query"]:
                sents.append(s), ep_of.append(e), is_query.append(True)
        S = len(sents)
        W = max(len(s["labels"]) for s in sents)
        E = len(episodes)
        self.E, self.S, self.W, self.n_max = E, S, W, n_max
        self.pieces = sum(len(s["ids"]) for s in sents)

        def t(x, dtype):
            return torch.tensor(x, dtype=dtype).to(device, non_blocking=non_blocking)

        # encoder calls: one padded call over all sentences, or (buckets > 1) the sentences
        # sorted by length and cut into `buckets` calls of about equal sentence count. The
        # outputs are packed back to back (bucket order) by `pack`: flat rows of real pieces.
        order = list(range(S))
        if buckets > 1:
            order.sort(key=lambda i: len(sents[i]["ids"]))
        cuts = [round(j * S / buckets) for j in range(buckets + 1)]
        self.calls = []
        packed_off = [0] * S
        off = 0
        self.padded = 0
        for j in range(buckets):
            members = order[cuts[j]:cuts[j + 1]]
            if not members:
                continue
            T = max(len(sents[i]["ids"]) for i in members)
            ids = [sents[i]["ids"] + [0] * (T - len(sents[i]["ids"])) for i in members]
            pack = []
            for r, i in enumerate(members):
                packed_off[i] = off
                n = len(sents[i]["ids"])
                pack.extend(range(r * T, r * T + n))
                off += n
            self.padded += len(members) * T
            self.calls.append((t(ids, torch.long), t([len(sents[i]["ids"]) for i in members],
                                                     torch.long), t(pack, torch.long)))
        word_row = [[0] * W for _ in range(S)]  # packed row of each word's first piece
        word_mask = [[False] * W for _ in range(S)]
        labels = [[0] * W for _ in range(S)]
        n_words = [0] * E
        n_entity_q = [0] * E
        n_query = [0] * E
        for i, s in enumerate(sents):
            for w, (p, y) in enumerate(zip(s["first_piece"], s["labels"])):
                word_row[i][w] = packed_off[i] + p
                word_mask[i][w] = True
                labels[i][w] = y
            e = ep_of[i]
            n_words[e] += len(s["labels"])
            if is_query[i]:
                n_query[e] += 1 if s["labels"] else 0
                n_entity_q[e] += sum(1 for y in s["labels"] if y != 0)
        # per-word weights of the span CE (mean over all words of the episode), of the type CE
        # (mean over query entity words); per-sentence weight of the CRF NLL
        span_w = [[(1.0 / n_words[ep_of[i]]) if word_mask[i][w] else 0.0 for w in range(W)]
                  for i in range(S)]
        type_w = [[(1.0 / n_entity_q[ep_of[i]]) if (is_query[i] and labels[i][w] != 0
                                                     and word_mask[i][w]) else 0.0
                   for w in range(W)] for i in range(S)]
        crf_w = [(1.0 / n_query[ep_of[i]]) if is_query[i] else 0.0 for i in range(S)]
        # prototype / posterior averaging matrices [E*n_max, S*W], and the types present
        sup_rows, sup_cols, sup_vals = [], [], []
        post_rows, post_cols, post_vals = [], [], []
        counts_sup = [[0] * n_max for _ in range(E)]
        counts_all = [[0] * n_max for _ in range(E)]
        members_sup = [[[] for _ in range(n_max)] for _ in range(E)]
        members_all = [[[] for _ in range(n_max)] for _ in range(E)]
        for i, s in enumerate(sents):
            e = ep_of[i]
            for w, y in enumerate(s["labels"]):
                if y == 0:
                    continue
                k = (y - 1) // 2
                members_all[e][k].append(i * W + w)
                counts_all[e][k] += 1
                if not is_query[i]:
                    members_sup[e][k].append(i * W + w)
                    counts_sup[e][k] += 1
        type_present = [[k < ep["n"] for k in range(n_max)] for ep in episodes]
        for e in range(E):
            for k in range(episodes[e]["n"]):
                assert counts_sup[e][k] > 0, "a type without support entity words"
                for m in members_sup[e][k]:
                    sup_rows.append(e * n_max + k), sup_cols.append(m)
                    sup_vals.append(1.0 / counts_sup[e][k])
                for m in members_all[e][k]:
                    post_rows.append(e * n_max + k), post_cols.append(m)
                    post_vals.append(1.0 / counts_all[e][k])
        # OT retrieval inputs: one problem per (episode, present type); support rows padded
        pairs = [(e, k) for e in range(E) for k in range(episodes[e]["n"])]
        r_max = max(len(members_sup[e][k]) for e, k in pairs)
        ot_rows = [[0] * r_max for _ in pairs]
        ot_mask = [[False] * r_max for _ in pairs]
        for p, (e, k) in enumerate(pairs):
            for j, m in enumerate(members_sup[e][k]):
                ot_rows[p][j] = m
                ot_mask[p][j] = True
        self.ot_pair = [e * n_max + k for e, k in pairs]
        self.ot_own = [episodes[e]["slots"][k] for e, k in pairs]
        # memory pushes: every entity word of support + query, per (slot) in word order
        self.push = [(episodes[e]["slots"][k], members_all[e][k]) for e, k in pairs]

        self.word_row = t(word_row, torch.long)
        self.word_mask = t(word_mask, torch.bool)
        self.labels = t(labels, torch.long)
        self.span_w = t(span_w, torch.float32)
        self.type_w = t(type_w, torch.float32)
        self.crf_w = t(crf_w, torch.float32)
        self.ep_of = t(ep_of, torch.long)
        self.query_idx = t([i for i in range(S) if is_query[i]], torch.long)
        self.type_present = t(type_present, torch.bool)
        self.n_types = t([ep["n"] for ep in episodes], torch.float32)
        n = E * n_max
        self.sup_avg = torch.zeros(n, S * W)
        self.sup_avg[torch.tensor(sup_rows), torch.tensor(sup_cols)] = torch.tensor(sup_vals)
        self.sup_avg = self.sup_avg.to(device, non_blocking=non_blocking)
        self.post_avg = torch.zeros(n, S * W)
        self.post_avg[torch.tensor(post_rows), torch.tensor(post_cols)] = torch.tensor(post_vals)
        self.post_avg = self.post_avg.to(device, non_blocking=non_blocking)
        self.ot_rows = t(ot_rows, torch.long)
        self.ot_mask = t(ot_mask, torch.bool)
        self.ot_pair_t = t(self.ot_pair, torch.long)
        self.ot_own_t = t(self.ot_own, torch.long)


# ---------------------------------------------------------------------------------------------
# Label memory and OT retrieval (no gradient)
# ---------------------------------------------------------------------------------------------
class LabelMemory:
    def __init__(self, slots, capacity, dim, device, gen):
        self.rows = (torch.randn(slots, capacity, dim, generator=gen) * 0.3).to(device)
        self.capacity = capacity
        self.ptr = [0] * slots

    @torch.no_grad()
    def retrieve(self, support, mask, own, eps=0.1, iters=100):
        """support [P, R, d] (rows where mask), own [P] slot to skip -> mapped means [P, d]."""
        x = support.double()
        y = self.rows.double()  # [S, M, d]
        a = mask.double() / mask.sum(1, keepdim=True).double()  # [P, R] uniform over real rows
        M = y.shape[1]
        b = torch.full((M,), 1.0 / M, dtype=torch.float64, device=x.device)
        # squared Euclidean cost [P, S, R, M], divided by its max per problem
        xx = (x * x).sum(-1)  # [P, R]
        yy = (y * y).sum(-1)  # [S, M]
        cost = (xx[:, None, :, None] + yy[None, :, None, :]
                - 2.0 * torch.einsum("prd,smd->psrm", x, y)).clamp_min(0.0)
        cost = cost.masked_fill(~mask[:, None, :, None], 0.0)
        cmax = cost.amax(dim=(2, 3), keepdim=True).clamp_min(1e-300)
        cost = cost / cmax
        K = torch.exp(-cost / eps) * mask[:, None, :, None]
        u = torch.ones_like(cost[..., 0])  # [P, S, R]
        v = torch.ones_like(cost[:, :, 0, :])  # [P, S, M]
        ap = a[:, None, :]
        for _ in range(iters):
            u = ap / (K @ v[..., None]).squeeze(-1).clamp_min(1e-300)
            v = b / (K.transpose(-1, -2) @ u[..., None]).squeeze(-1).clamp_min(1e-300)
        plan = u[..., None] * K * v[..., None, :]  # [P, S, R, M]
        dist = (plan * cost).sum(dim=(2, 3))  # [P, S]
        dist[torch.arange(dist.shape[0], device=dist.device), own] = float("inf")
        best = dist.argmin(1)  # [P]
        tp = plan[torch.arange(plan.shape[0], device=plan.device), best]  # [P, R, M]
        col = tp.sum(1).clamp_min(1e-300)  # [P, M]
        mapped = torch.einsum("prm,prd->pmd", tp, x) / col[..., None]  # memory rows moved
        return mapped.mean(1).float()

    @torch.no_grad()
    def push(self, vectors, pushes):
        """vectors [S*W, d] word type vectors; pushes [(slot, [word rows])]: ring-buffer FIFO."""
        dst_slot, dst_row, src = [], [], []
        for slot, members in pushes:
            members = members[-self.capacity:]
            for m in members:
                dst_slot.append(slot)
                dst_row.append(self.ptr[slot])
                src.append(m)
                self.ptr[slot] = (self.ptr[slot] + 1) % self.capacity
        dev = self.rows.device
        self.rows[torch.tensor(dst_slot, device=dev), torch.tensor(dst_row, device=dev)] = \
            vectors[torch.tensor(src, device=dev)]


# ---------------------------------------------------------------------------------------------
# Loss
# ---------------------------------------------------------------------------------------------
def crf_nll(em, labels, mask, trans, start, end):
    """em [Q, W, L], labels [Q, W], mask [Q, W] bool (a prefix per sentence) -> NLL [Q]."""
    Q, W, L = em.shape
    fmask = mask.to(em.dtype)
    alpha = start[None] + em[:, 0]
    for t in range(1, W):
        nxt = torch.logsumexp(alpha[:, :, None] + trans[None], dim=1) + em[:, t]
        alpha = torch.where(mask[:, t, None], nxt, alpha)
    log_z = torch.logsumexp(alpha + end[None], dim=1)
    gold_em = em.gather(2, labels[..., None]).squeeze(-1)
    gold = (gold_em * fmask).sum(1)
    gold = gold + (trans[labels[:, :-1], labels[:, 1:]] * fmask[:, 1:]).sum(1)
    last = labels.gather(1, (mask.sum(1) - 1).clamp_min(0)[:, None]).squeeze(1)
    gold = gold + start[labels[:, 0]] + end[last]
    return log_z - gold


def episode_losses(b, boundary, types, heads, transitions, memory, args):
    """Sum over the batch's episodes of each episode's loss (crf + span + type + 1e-3 kl)."""
    d = types.shape[-1]
    # word-level outputs: first piece of each word
    bw = boundary.reshape(-1, 3)[b.word_row]  # [S, W, 3]
    tw = types.reshape(-1, d)[b.word_row]  # [S, W, d]
    if args.loss_f64:
        bw, tw = bw.double(), tw.double()
    mask = b.word_mask
    lb = torch.log_softmax(bw, dim=-1)
    cls = torch.where(b.labels == 0, 0, torch.where(b.labels % 2 == 1, 1, 2))
    span = -(lb.gather(2, cls[..., None]).squeeze(-1) * b.span_w.to(lb.dtype)).sum()

    tw_flat = tw.reshape(-1, d)
    s_means = b.sup_avg.to(tw.dtype) @ tw_flat  # [E*n, d] support prototypes
    post = b.post_avg.to(tw.dtype) @ tw_flat  # [E*n, d] posterior means
    m_means = s_means  # no memory: the support mean itself, gradient through both halves
    if memory is not None:
        sup = tw_flat.detach()[b.ot_rows]  # [P, R, d]
        mapped = memory.retrieve(sup, b.ot_mask, b.ot_own_t, iters=args.sinkhorn_iters)
        m_means = s_means.detach().clone()  # rows of absent (padding) types stay as they are
        m_means[b.ot_pair_t] = mapped.to(m_means.dtype)
    prior_in = torch.cat([s_means, m_means], dim=-1)
    mlp = F.linear(F.relu(F.linear(prior_in, heads.fc1.weight.to(tw.dtype), heads.fc1.bias.to(tw.dtype))),
                   heads.fc2.weight.to(tw.dtype), heads.fc2.bias.to(tw.dtype))
    mu = 0.5 * mlp + 0.5 * s_means  # [E*n, d]
    n = b.n_max
    mu_e = mu.view(b.E, n, d)

    # query emissions
    qi = b.query_idx
    q_ep = b.ep_of[qi]
    scores = torch.bmm(tw[qi], mu_e[q_ep].transpose(1, 2))  # [Q, W, n]
    scores = scores.masked_fill(~b.type_present[q_ep][:, None, :], NEG)
    lt = torch.log_softmax(scores, dim=-1)
    lbq = lb[qi]
    q_labels = b.labels[qi]
    q_mask = mask[qi]
    type_idx = ((q_labels - 1).clamp_min(0) // 2)
    type_ce = -(lt.gather(2, type_idx[..., None]).squeeze(-1) * b.type_w[qi].to(lt.dtype)).sum()
    bi = torch.stack([lbq[..., 1:2] + lt, lbq[..., 2:3] + lt], dim=-1).reshape(*lt.shape[:2], 2 * n)
    em = torch.cat([lbq[..., :1], bi], dim=-1)  # [Q, W, 1 + 2n]
    trans, start, end = transitions.unfold(heads)
    nll = crf_nll(em, q_labels, q_mask, trans.to(em.dtype), start.to(em.dtype), end.to(em.dtype))
    crf = (nll * b.crf_w[qi].to(nll.dtype)).sum()

    # variational term: mean over present types of 1/2 ||post - mu||^2
    diff2 = 0.5 * ((post - mu) ** 2).sum(-1).view(b.E, n)
    kl = (diff2 * b.type_present.to(diff2.dtype) / b.n_types[:, None].to(diff2.dtype)).sum()
    total = crf + span + type_ce + 1e-3 * kl
    return total, torch.stack([crf, span, type_ce, kl]).detach().float(), tw_flat.detach().float()


# ---------------------------------------------------------------------------------------------
# Training step
# ---------------------------------------------------------------------------------------------
def build_optimizer(enc, heads, args):
    groups = {}
    for module, head_names in ((enc, ("boundary.", "types.")), (heads, None)):
        for name, p in module.named_parameters():
            is_head = head_names is None or name.startswith(head_names)
            no_decay = name.endswith(".bias") or "_ln." in name or name.startswith("cdt_")
            key = (is_head, no_decay)
            groups.setdefault(key, []).append(p)
    param_groups = [
        {"params": ps, "lr": args.lr_heads if is_head else args.lr_encoder,
         "weight_decay": 0.0 if no_decay else 0.01}
        for (is_head, no_decay), ps in sorted(groups.items())
    ]
    kw = {}
    if args.adam == "fused":
        kw["fused"] = True
    elif args.device == "cuda":
        kw["foreach"] = True
    return torch.optim.AdamW(param_groups, betas=(0.9, 0.999), eps=1e-8, **kw)


def run_step(episodes, enc, heads, opt, memory, transitions, args, device, mode):
    n_max = max(ep["n"] for ep in episodes)
    opt.zero_grad(set_to_none=False)
    scale = 1.0 / args.episodes_per_step
    chunks = [[ep] for ep in episodes] if mode == "per-episode" else [episodes]
    buckets = args.buckets if mode == "per-step-sorted" else 1
    batches = [Batch(c, max(ep["n"] for ep in c), device, device.type == "cuda", buckets)
               for c in chunks]
    terms = []
    pushes = []
    for b in batches:
        outs = [enc(ids, lengths) + (pack,) for ids, lengths, pack in b.calls]
        boundary = torch.cat([bd.reshape(-1, bd.shape[-1])[pk] for bd, _, pk in outs])
        types = torch.cat([ty.reshape(-1, ty.shape[-1])[pk] for _, ty, pk in outs])
        tr = transitions[b.n_max]
        total, t, vecs = episode_losses(b, boundary, types, heads, tr, memory, args)
        (total * scale).backward()
        terms.append(t)
        pushes.append((vecs, b.push))
    params = [p for g in opt.param_groups for p in g["params"]]
    torch.nn.utils.clip_grad_norm_(params, args.clip_norm)
    opt.step()
    if memory is not None:
        for vecs, push in pushes:
            memory.push(vecs, push)
    pieces = sum(b.pieces for b in batches)
    padded = sum(b.padded for b in batches)
    return torch.stack(terms).sum(0) * scale, pieces, padded, n_max


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(mode, args, device, shape):
    gen = torch.Generator().manual_seed(args.seed)
    enc = Encoder(shape, args.attention)
    init_encoder(enc, gen)
    heads = Heads(shape["type_dim"], gen)
    enc.to(device)
    heads.to(device)
    opt = build_optimizer(enc, heads, args)
    memory = None
    if not args.no_memory:
        memory = LabelMemory(sum(SOURCE_TYPES), 15, shape["type_dim"], device, gen)
    transitions = {n: Transitions(n, device) for n in sorted({c[0] for c in EPISODE_CONFIGS})}
    n_params = sum(p.numel() for p in enc.parameters()) + sum(p.numel() for p in heads.parameters())

    times, pieces_all, padded_all, losses = [], [], [], []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for step in range(args.warmup + args.steps):
        episodes = step_episodes(args.seed, step, args.episodes_per_step, shape, args.max_pieces)
        for ep in episodes:
            for s in ep["support"] + ep["query"]:
                check_bio(s["labels"], ep["n"])
        sync(device)
        t0 = time.perf_counter()
        terms, pieces, padded, _ = run_step(episodes, enc, heads, opt, memory, transitions,
                                            args, device, mode)
        sync(device)
        dt = time.perf_counter() - t0
        terms = terms.cpu().tolist()  # after the timing: forces nothing the step did not
        losses.append(terms)
        if not all(math.isfinite(x) for x in terms):
            sys.exit(f"pytorch_step: non-finite loss terms at step {step}: {terms}")
        if step >= args.warmup:
            times.append(dt)
            pieces_all.append(pieces)
            padded_all.append(padded)
        if args.verbose:
            tag = "warm-up" if step < args.warmup else "step"
            print(f"  {mode} {tag} {step}: {dt * 1e3:.1f} ms, {pieces} pieces ({padded} padded), "
                  f"loss crf/span/type/kl {['%.4f' % x for x in terms]}", file=sys.stderr)
    med = statistics.median(times)
    out = {
        "impl": "pytorch-eager",
        "batching": mode,
        "attention": args.attention,
        "buckets": args.buckets if mode == "per-step-sorted" else 1,
        "device": device.type,
        "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                        else platform.processor() or platform.machine()),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "shape": "tiny" if args.tiny else "minilm-l6",
        "parameters": n_params,
        "dtype": "float32",
        "tf32": False,
        "loss_f64": args.loss_f64,
        "memory_ot": not args.no_memory,
        "sinkhorn_iters": args.sinkhorn_iters,
        "adam": args.adam,
        "threads": torch.get_num_threads(),
        "episodes_per_step": args.episodes_per_step,
        "warmup": args.warmup,
        "steps": args.steps,
        "median_step_ms": round(med * 1e3, 3),
        "min_step_ms": round(min(times) * 1e3, 3),
        "max_step_ms": round(max(times) * 1e3, 3),
        "step_ms": [round(t * 1e3, 3) for t in times],
        "episodes_per_s": round(args.episodes_per_step / med, 3),
        "pieces_per_step_median": statistics.median(pieces_all),
        "padded_tokens_per_step_median": statistics.median(padded_all),
        "first_loss": round(sum(losses[0][:3]) + 1e-3 * losses[0][3], 5),
        "last_loss": round(sum(losses[-1][:3]) + 1e-3 * losses[-1][3], 5),
        "seed": args.seed,
    }
    if device.type == "cuda":
        out["peak_gpu_mem_bytes"] = torch.cuda.max_memory_allocated(device)
        out["peak_gpu_reserved_bytes"] = torch.cuda.max_memory_reserved(device)
    out["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    del enc, heads, opt, memory
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--episodes-per-step", type=int, default=16)
    ap.add_argument("--batching", default="both",
                    choices=["per-episode", "per-step", "per-step-sorted", "both", "all"],
                    help="both: per-episode and per-step; all: also per-step-sorted")
    ap.add_argument("--buckets", type=int, default=4,
                    help="per-step-sorted: encoder calls per step, sentences sorted by length")
    ap.add_argument("--attention", choices=["sdpa", "manual"], default="sdpa",
                    help="F.scaled_dot_product_attention (default) or matmul-softmax-matmul")
    ap.add_argument("--max-pieces", type=int, default=96, help="configs/cross-domain.toml")
    ap.add_argument("--lr-encoder", type=float, default=1e-4)
    ap.add_argument("--lr-heads", type=float, default=1e-3)
    ap.add_argument("--clip-norm", type=float, default=1.0)
    ap.add_argument("--adam", choices=["foreach", "fused"], default="foreach",
                    help="torch.optim.AdamW implementation (foreach is the CUDA default)")
    ap.add_argument("--sinkhorn-iters", type=int, default=100)
    ap.add_argument("--no-memory", action="store_true", help="skip OT retrieval (m_k = s_k)")
    ap.add_argument("--loss-f64", action="store_true", help="widen head outputs to f64 for the loss")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--tiny", action="store_true", help="a tiny model shape, for smoke tests")
    ap.add_argument("--seed", type=int, default=20261122)
    ap.add_argument("--json", default=None, help="append one JSON line per mode to this file")
    ap.add_argument("--verbose", action="store_true", help="one line per step on stderr")
    args = ap.parse_args()
    if args.steps < 1 or args.warmup < 0 or args.episodes_per_step < 1:
        sys.exit("pytorch_step: need --steps >= 1, --warmup >= 0, --episodes-per-step >= 1")

    if args.threads:
        torch.set_num_threads(args.threads)
    # fp32 everywhere, no TF32: the same arithmetic as our f32 kernels
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    if args.device == "cuda":
        if not torch.cuda.is_available():
            sys.exit("pytorch_step: --device cuda but torch.cuda.is_available() is false")
        device = torch.device("cuda", 0)
    else:
        device = torch.device("cpu")
    torch.manual_seed(args.seed)
    shape = tiny_shape() if args.tiny else minilm_shape()
    modes = {"both": ["per-episode", "per-step"],
             "all": ["per-episode", "per-step", "per-step-sorted"]}.get(args.batching,
                                                                       [args.batching])
    results = []
    for mode in modes:
        r = bench(mode, args, device, shape)
        results.append(r)
        print(json.dumps(r), flush=True)
        mem = (f", peak GPU memory {r['peak_gpu_mem_bytes'] / 2**20:.0f} MiB allocated "
               f"({r['peak_gpu_reserved_bytes'] / 2**20:.0f} MiB reserved)"
               if "peak_gpu_mem_bytes" in r else f", peak RSS {r['peak_rss_bytes'] / 2**20:.0f} MiB")
        print(f"pytorch eager {mode} on {r['device_name']} ({r['shape']}, {r['attention']}, "
              f"{r['threads']} CPU threads): median step {r['median_step_ms']:.1f} ms over "
              f"{r['steps']} steps, {r['episodes_per_s']:.2f} episodes/s at "
              f"{r['episodes_per_step']} episodes/step, {r['pieces_per_step_median']:.0f} "
              f"pieces/step ({r['padded_tokens_per_step_median']:.0f} padded){mem}", flush=True)
        if args.json:
            with open(args.json, "a", encoding="utf-8") as f:
                f.write(json.dumps(r) + "\n")
    if len(results) > 1:
        best = min(results, key=lambda r: r["median_step_ms"])
        print(f"faster: {best['batching']} ({best['episodes_per_s']:.2f} episodes/s)", flush=True)


if __name__ == "__main__":
    main()
