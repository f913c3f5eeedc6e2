"""The BERT encoder with drop-and-restore token reduction, and its QA head (docs/method.md,
"Drop and restore").

At full length this computes exactly what transformers' BertForQuestionAnswering computes. Given
a length configuration, a layer that keeps fewer tokens than it received
  1. runs self-attention over all of its tokens,
  2. scores each token: with the model's learned selector (selector.py: [CLS], the question and
     the separators first, then the context tokens by a small scorer on their post-attention
     states), or by the attention it receives, summed over heads and real query positions,
  3. sends only the top-scoring tokens through the feed-forward block and on to the next layer,
  4. leaves the dropped tokens with their latest hidden state, which is written back at their
     original positions after the last layer ("restore"), so the QA head sees every token.
Layers that keep every token, and layers that drop by the learned selector, use fused attention;
only layers that drop by attention received build the attention probabilities.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property, partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import SELECTORS, ModelConfig
from .lengths import Lengths, kept_tokens, validate_lengths, validate_margins
from .selector import SelectorError, TokenSelector, context_tokens, margin_kept, ranking

_ACTIVATIONS = {
    "gelu": F.gelu,
    "relu": F.relu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
}


@dataclass
class QAOutput:
    start_logits: Tensor  # (B, T)
    end_logits: Tensor  # (B, T)
    # per layer, only when asked for and only at full length (distillation targets)
    hidden_states: list[Tensor] | None = None  # L+1 tensors (B, T, d), embeddings first
    attentions: list[Tensor] | None = None  # L tensors (B, H, T, T)
    attended: list[Tensor] | None = None  # L tensors (B, T, d): each layer's post-attention states
    # per dropping layer, when asked for: the learned selector's scores of the tokens present, in
    # the input layout (B, T), and (B, T) True where a token was present (selector training)
    scores: list[tuple[Tensor, Tensor]] | None = None
    # per row, the tokens entering the first layer and then kept by each layer, n(0), ..., n(L)
    token_counts: list[list[int]] | None = None


def _embedding(count: int, size: int, padding_idx: int | None = None) -> nn.Embedding:
    """nn.Embedding; built on the meta device (a checkpoint's weights to come), without its random
    initialisation, which there imports torch's compiler first: seconds of a cold start."""
    weight = torch.empty(count, size) if torch.get_default_device().type == "meta" else None
    return nn.Embedding(count, size, padding_idx=padding_idx, _weight=weight)


class Embeddings(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.word = _embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position = _embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type = _embedding(config.type_vocab_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: Tensor, positions: Tensor, token_type_ids: Tensor) -> Tensor:
        """Any shape of ids, with their position and segment ids of the same shape."""
        h = self.word(input_ids) + self.position(positions) + self.token_type(token_type_ids)
        return self.dropout(self.norm(h))


class Tokens:
    """The tokens still present in a batch, packed row after row with no padding.

    Linear layers run on the packed (N, d) tensor, so no work is spent on padding; attention runs
    on a padded view (B, width, .) in which each row's tokens come first.
    Example: rows of 3 and 1 real tokens pack into N = 4 tokens; their padded view has width 3,
    and `slots` = [0, 1, 2, 3] places them at (0, 0), (0, 1), (0, 2), (1, 0).
    """

    def __init__(self, counts: list[int], origin: Tensor, size: int, identity: bool = False):
        self.counts = counts
        self.size = size  # B * T, the slots of the input
        self.origin = origin  # (N,) index b * T + t of each token in the (B, T) input
        self.identity = identity  # the input had no padding and nothing was dropped yet
        self.width = max(counts)
        self.full = all(c == self.width for c in counts)  # no padding in the padded view
        device = origin.device
        self.valid = (
            torch.arange(self.width, device=device)[None, :] < torch.tensor(counts, device=device)[:, None]
        )
        self.slots = None if self.full else self.valid.flatten().nonzero().squeeze(1)  # (N,)
        self.key_mask = None if self.full else self.valid[:, None, None, :]  # (B, 1, 1, width)

    @cached_property
    def starts(self) -> Tensor:
        """(B,) the packed index of each row's first token (dropping layers ask for it)."""
        return torch.tensor([0, *self.counts[:-1]], device=self.origin.device).cumsum(0)

    @classmethod
    def whole(cls, count: int, device: torch.device) -> Tokens:
        """One window of `count` tokens, all present."""
        return cls([count], torch.arange(count, device=device), count, identity=True)

    @classmethod
    def of_input(cls, attention_mask: Tensor) -> Tokens:
        valid = attention_mask.bool()
        origin = valid.flatten().nonzero().squeeze(1)
        return cls(valid.sum(1).tolist(), origin, valid.numel(), identity=bool(valid.all()))

    def pad(self, x: Tensor) -> Tensor:
        """(N, k) -> (B, width, k), zeros at padding."""
        B, k = len(self.counts), x.shape[-1]
        if self.full:
            return x.view(B, self.width, k)
        return x.new_zeros(B * self.width, k).index_copy_(0, self.slots, x).view(B, self.width, k)

    def unpad(self, x: Tensor) -> Tensor:
        """(B, width, k) -> (N, k)."""
        x = x.reshape(-1, x.shape[-1])
        return x if self.full else x.index_select(0, self.slots)

    def keep(self, kept: Tensor) -> tuple[Tensor, Tokens]:
        """The packed positions of the tokens marked in `kept` (B, width), in order, and the new
        token set."""
        chosen = self.unpad(kept[..., None]).squeeze(1).nonzero().squeeze(1)
        return chosen, Tokens(kept.sum(1).tolist(), self.origin[chosen], self.size)

    def restore(self, x: Tensor, into: Tensor | None = None) -> Tensor:
        """x (N, k) placed at these tokens' places in the input layout (B * T, k): written into
        `into` in place when given, else into zeros (or x itself, when these tokens are the
        whole input in order)."""
        if into is None:
            if self.identity:
                return x
            into = x.new_zeros(self.size, x.shape[-1])
        return into.index_copy_(0, self.origin, x)


class Layer(nn.Module):
    """One post-norm BERT layer, split into attention and feed-forward so tokens can leave between."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        d = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.attn_out = nn.Linear(d, d)
        self.attn_norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.ffn_in = nn.Linear(d, config.intermediate_size)
        self.ffn_out = nn.Linear(config.intermediate_size, d)
        self.ffn_norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.act = _ACTIVATIONS[config.hidden_act]
        self.attn_dropout = config.attention_probs_dropout_prob
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def attend(self, x: Tensor, tokens: Tokens, output: str = "none") -> tuple[Tensor, Tensor | None]:
        """Self-attention block over the packed tokens x (N, d) of each row.

        Returns the block's output (N, d) and, by `output`:
          "none": nothing more, using fused attention;
          "significance": (B, width) the attention each token receives, summed over heads and
            real query positions (PoWER-BERT's score), before dropout;
          "probs": (B, H, width, width) the attention probabilities before dropout.
        """
        B, W = len(tokens.counts), tokens.width
        # (B, H, W, dh) each
        q, k, v = (
            tokens.pad(_per_window(p, x, tokens.counts)).view(B, W, self.num_heads, -1).transpose(1, 2)
            for p in (self.query, self.key, self.value)
        )
        dropout_p = self.attn_dropout if self.training else 0.0
        if len(tokens.counts) > 1 and getattr(self.attn_out, "per_window", False) and dropout_p == 0:
            context, extra = _attention_per_window(q, k, v, tokens, output)
        else:
            context, extra = _attention(q, k, v, tokens, dropout_p, output)
            context = tokens.unpad(context.transpose(1, 2).reshape(B, W, -1))  # (N, d)
        return self.attn_norm(x + self.dropout(_per_window(self.attn_out, context, tokens.counts))), extra

    def feed_forward(self, a: Tensor, rows: list[int]) -> Tensor:
        """The feed-forward block on the packed tokens a (N, d), `rows` of them per window."""
        inner = self.act(_per_window(self.ffn_in, a, rows))
        return self.ffn_norm(a + self.dropout(_per_window(self.ffn_out, inner, rows)))

    def forward(self, x: Tensor, tokens: Tokens) -> Tensor:
        return self.feed_forward(self.attend(x, tokens)[0], tokens.counts)


def _per_window(linear: nn.Module, x: Tensor, rows: list[int]) -> Tensor:
    """linear(x) on packed tokens x (N, k), `rows` of them per window; a map marked `per_window`
    (int8, quantizing its input by the input's range: precision.py) runs on each window's tokens
    apart, so that a window gets the same result in any batch."""
    if len(rows) == 1 or not getattr(linear, "per_window", False):
        return linear(x)
    return torch.cat([linear(part) for part in x.split(rows)])


def _attention(q: Tensor, k: Tensor, v: Tensor, tokens: Tokens, dropout_p: float, output: str):
    """Attention over the padded view (B, H, width, dh): its context (B, H, width, dh), and what
    `output` asks for (Layer.attend)."""
    if output == "none":
        return _fused_attention(q, k, v, tokens, dropout_p), None
    return _explicit_attention(q, k, v, tokens, dropout_p, output == "probs")


def _attention_per_window(q: Tensor, k: Tensor, v: Tensor, tokens: Tokens, output: str):
    """Attention on each window's tokens alone, for quantized layers: the fp32 products of a padded
    batch round differently in the last bit, and int8 quantization can turn a last bit into a
    step, so a window's answer would depend on its batch-mates. Returns the packed context (N, d)
    and what `output` asks for, padded to the batch's width with zeros. Inference only."""
    width, contexts, extras = tokens.width, [], []
    for row, count in enumerate(tokens.counts):
        window = (t[row : row + 1, :, :count] for t in (q, k, v))
        context, extra = _attention(*window, Tokens.whole(count, q.device), 0.0, output)
        contexts.append(context[0].transpose(0, 1).reshape(count, -1))
        if extra is not None:  # (1, count) significance or (1, H, count, count) probabilities
            pad = (0, width - count) if extra.dim() == 2 else (0, width - count, 0, width - count)
            extras.append(F.pad(extra, pad))
    return torch.cat(contexts), (torch.cat(extras) if extras else None)


# rows per call of fused attention where a batch's rows hold very different token counts, and the
# share of the padded view that real tokens must fill for one call over the whole batch
_GROUP_ROWS, _GROUP_FILL = 8, 0.75


def _fused_attention(q: Tensor, k: Tensor, v: Tensor, tokens: Tokens, dropout_p: float) -> Tensor:
    """Fused attention over the padded view (B, H, width, dh). Where real tokens fill little of it
    (margins keep a different number of tokens in each window), rows of similar counts run
    together, each group only as wide as its longest row: each row's tokens come first in its
    row of the view, so a group's slice holds them all. Rows of padding stay zero."""
    counts, B, W = tokens.counts, len(tokens.counts), tokens.width
    if dropout_p > 0 or B <= _GROUP_ROWS or sum(counts) >= _GROUP_FILL * B * W:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=tokens.key_mask, dropout_p=dropout_p)
    order = sorted(range(B), key=counts.__getitem__)
    context = q.new_zeros(q.shape)
    for first in range(0, B, _GROUP_ROWS):
        rows = order[first : first + _GROUP_ROWS]
        width = max(counts[r] for r in rows)
        index = torch.tensor(rows, device=q.device)
        q_g, k_g, v_g = (t[index, :, :width] for t in (q, k, v))
        mask = tokens.key_mask[index, :, :, :width]
        context[index, :, :width] = F.scaled_dot_product_attention(q_g, k_g, v_g, attn_mask=mask)
    return context


# elements of one block of attention scores (8 MB in fp32): blocks that stay in cache keep the
# explicit attention of dropping layers close to the speed of fused attention at 384 tokens
_SCORE_BLOCK = 2**21


def _explicit_attention(
    q: Tensor, k: Tensor, v: Tensor, tokens: Tokens, dropout_p: float, keep_probs: bool
) -> tuple[Tensor, Tensor]:
    """softmax(q k^T / sqrt(dh)) v, computed a few batch rows at a time, with either the
    probabilities (B, H, W, W) or the significance of each key (B, W) beside it."""
    B, H, W, dh = q.shape
    q = q * dh**-0.5
    bias = None
    if tokens.key_mask is not None:
        bias = torch.zeros(tokens.key_mask.shape, dtype=q.dtype, device=q.device)
        bias = bias.masked_fill(~tokens.key_mask, torch.finfo(q.dtype).min)  # (B, 1, 1, W)
    real_queries = tokens.valid.to(q.dtype)[:, None, None, :]  # (B, 1, 1, W)
    step = B if keep_probs else max(1, _SCORE_BLOCK // (H * W * W))
    contexts, extras = [], []
    for rows in (slice(i, i + step) for i in range(0, B, step)):
        scores = q[rows] @ k[rows].transpose(-1, -2)  # (b, H, W, W)
        if bias is not None:
            scores = scores + bias[rows]
        probs = scores.softmax(dim=-1)
        extras.append(probs if keep_probs else (real_queries[rows] @ probs).sum(dim=(1, 2)))
        contexts.append(F.dropout(probs, dropout_p, training=dropout_p > 0) @ v[rows])
    return torch.cat(contexts), torch.cat(extras)


def select_tokens(significance: Tensor, keep: Tensor) -> Tensor:
    """(B, T) True on the tokens each row keeps: its `keep[b]` most significant ones.

    significance (B, T) is -inf at padding; keep (B,) counts.
    Example: significance [[.1, .9, .5, .7]], keep [2] -> [[False, True, False, True]].
    """
    K = int(keep.max())
    top = significance.topk(K, dim=1).indices  # (B, K), best first; distinct in a row
    wanted = torch.arange(K, device=keep.device)[None, :] < keep[:, None]  # (B, K)
    return torch.zeros_like(significance, dtype=torch.bool).scatter_(1, top, wanted)


class DynamicBertForQuestionAnswering(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))
        self.qa_head = nn.Linear(config.hidden_size, 2)
        if torch.get_default_device().type != "meta":  # there: no storage to initialise
            self.apply(self._init_weights)
        # the learned token selector (selector.py), saved beside the weights; None: attention received
        self.selector: TokenSelector | None = None

    def _init_weights(self, module: nn.Module) -> None:
        """BERT's initialisation, for heads that a checkpoint does not provide."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.config.initializer_range)
        if isinstance(module, nn.Linear):
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def resolve_selector(self, selector: str | None) -> str:
        """The selector a forward pass drops tokens by: "learned" or "attention" as asked, or
        (None) the learned one where the model has it."""
        if selector is None:
            return "learned" if self.selector is not None else "attention"
        if selector not in SELECTORS:
            raise SelectorError(f"selector {selector!r} is not one of {', '.join(SELECTORS)}")
        if selector == "learned" and self.selector is None:
            raise SelectorError(
                "this model has no learned selector (selector.safetensors); train one with "
                "`dynamic-tinybert train --stage selector`, or use the attention selector"
            )
        return selector

    def scorer_macs(self, selector: str | None = None) -> int:
        """Multiply-adds per token scored at a dropping layer (the cost model's selector term)."""
        if self.resolve_selector(selector) == "learned":
            return self.selector.config.macs_per_token
        return 0

    def keep_plan(
        self,
        counts: list[int],
        lengths: Lengths | None,
        skip: Sequence[bool] | None = None,
        margins: Sequence[float] | None = None,
    ) -> list[Tensor | float | None]:
        """Per layer, the tokens each row keeps (B,), or None where the layer keeps them all; under
        margins, each layer's margin (its counts come from the scores), None for inf.

        counts: real tokens per row; skip: layers left out (LayerDrop), which keep everything.
        """
        if margins is not None:
            return [None if math.isinf(margin) else margin for margin in margins]
        plan: list[Tensor | None] = []
        previous = counts
        for i, share in enumerate(lengths or (1.0,) * self.config.num_hidden_layers):
            keep = (
                previous
                if skip and skip[i]
                else [min(p, kept_tokens(n, share)) for p, n in zip(previous, counts, strict=True)]
            )
            plan.append(None if keep == previous else torch.tensor(keep))
            previous = keep
        return plan

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        lengths: Sequence[float] | None = None,
        skip: Sequence[bool] | None = None,
        selector: str | None = None,
        margins: Sequence[float] | float | None = None,
        fixed_scores: Tensor | Sequence[Tensor | None] | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        output_attended: bool = False,
        output_scores: bool = False,
    ) -> QAOutput:
        """Start and end logits (B, T) for every input position.

        lengths: one share per layer (see lengths.py); None runs the full model.
        skip: per layer, True to leave it out (LayerDrop in training).
        selector: which tokens dropping layers keep: "attention" (the attention they receive),
          "learned" (the model's selector), or None (learned where the model has one).
        margins: instead of lengths, one margin per layer: each window keeps the tokens the learned
          selector scores within the margin of its best one (selector.margin_kept; inf: all).
        fixed_scores: (B, T) a ranking of the context tokens for every dropping layer instead of a selector,
          or one per layer (None: the learned selector there); a diagnostic (selector_report's oracle).
        output_attended: each layer's post-attention states, what the selector reads (training).
        output_scores: the learned selector's scores at each dropping layer (its cascade training).
        """
        per_layer = output_hidden_states or output_attentions or output_attended
        lengths, margins = self._configuration(lengths, margins, skip, selector, fixed_scores, per_layer)
        B, T = input_ids.shape
        attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        token_type_ids = torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids
        tokens = Tokens.of_input(attention_mask)
        positions = torch.arange(T, device=input_ids.device).repeat(B)
        x = self.embeddings(*(t.flatten()[tokens.origin] for t in (input_ids, positions, token_type_ids)))
        final = None  # from the first drop on: every token's latest state in the input layout (B * T, d)
        hidden_states = [tokens.restore(x).view(B, T, -1)] if output_hidden_states else None
        attentions, attended_states = ([] if output_attentions else None), ([] if output_attended else None)
        scores = [] if output_scores else None
        rank = self._ranker(selector, attention_mask, token_type_ids, positions, fixed_scores, scores)

        plan = self.keep_plan(tokens.counts, lengths, skip, margins)
        counts = [tokens.counts]
        for i, (layer, keep) in enumerate(zip(self.layers, plan, strict=True)):
            if skip and skip[i]:
                pass  # left out (LayerDrop): the tokens go on as they came
            elif keep is None:
                x = self._keep_all(layer, x, tokens, attentions, attended_states)
            else:
                # the dropped tokens keep the state they came with
                final = tokens.restore(x, final if final is not None else x.new_zeros(B * T, x.shape[-1]))
                x, tokens = self._drop(i, layer, x, tokens, keep, rank)
            if output_hidden_states:
                hidden_states.append(tokens.restore(x).view(B, T, -1))
            counts.append(tokens.counts)

        start_logits, end_logits = self.qa_head(tokens.restore(x, final)).view(B, T, 2).unbind(dim=-1)
        per_row = [list(row) for row in zip(*counts, strict=True)]
        return QAOutput(start_logits, end_logits, hidden_states, attentions, attended_states, scores, per_row)

    def _keep_all(self, layer: nn.Module, x: Tensor, tokens: Tokens, attentions, attended_states) -> Tensor:
        """A layer that keeps every token; its attention probabilities and post-attention states
        go to those lists where they are given."""
        attended, probs = layer.attend(x, tokens, output="probs" if attentions is not None else "none")
        if attentions is not None:
            attentions.append(probs)
        if attended_states is not None:
            attended_states.append(tokens.restore(attended).view(len(tokens.counts), -1, x.shape[-1]))
        return layer.feed_forward(attended, tokens.counts)

    def _configuration(self, lengths, margins, skip, selector, fixed_scores, per_layer: bool):
        """The validated (lengths, margins), at most one of them not None (all ones, all inf:
        None). Margins need the learned selector's scores; per-layer outputs, the full model."""
        lengths = validate_lengths(lengths, self.config.num_hidden_layers)
        margins = validate_margins(margins, self.config.num_hidden_layers)
        if (lengths is not None or margins is not None or skip) and per_layer:
            raise ValueError("hidden states and attentions are only returned for the full model")
        if margins is None:
            return lengths, None
        if lengths is not None:
            raise ValueError("give lengths or margins, not both")
        if self.resolve_selector(selector) != "learned" or fixed_scores is not None:
            raise SelectorError(
                "margins compare the learned selector's scores; use them with the learned selector "
                "(a model with selector.safetensors), or give lengths"
            )
        return None, margins

    def _ranker(self, selector, attention_mask, token_type_ids, positions, fixed_scores, record):
        """The learned or fixed ranking of the tokens a dropping layer uses (see _rank); None:
        attention received. `record` collects the learned selector's scores (output_scores)."""
        learned = self.resolve_selector(selector) == "learned" and fixed_scores is None
        layers = self.config.num_hidden_layers
        if isinstance(fixed_scores, Tensor):
            fixed_scores = [fixed_scores] * layers  # one ranking for every layer
        elif fixed_scores is not None:
            if len(fixed_scores) != layers:
                raise ValueError(f"got fixed scores for {len(fixed_scores)} layers, not {layers}")
            if any(s is None for s in fixed_scores):
                self.resolve_selector("learned")  # the layers without fixed scores need the selector
        if record is not None and not learned:
            raise ValueError("scores are only returned when the learned selector drops the tokens")
        if not learned and fixed_scores is None:
            return None
        context = context_tokens(attention_mask, token_type_ids).flatten()
        return partial(
            self._rank, context=context, positions=positions, fixed_scores=fixed_scores, record=record
        )

    def _drop(
        self, i: int, layer: nn.Module, x: Tensor, tokens: Tokens, keep: Tensor | float, rank
    ) -> tuple[Tensor, Tokens]:
        """Layer i where it keeps `keep` tokens per row (or, for a margin, the tokens ranked within
        it of each row's best): attention over every token present, then the feed-forward block
        on the best-ranked ones only."""
        if rank is not None:
            attended, _ = layer.attend(x, tokens)  # fused: no attention probabilities needed
            scores = rank(i, attended, tokens)
        else:
            attended, scores = layer.attend(x, tokens, output="significance")
            scores = scores.masked_fill(~tokens.valid, -math.inf)
        if isinstance(keep, Tensor):
            kept = select_tokens(scores, keep.to(x.device))
        else:
            kept = margin_kept(scores, keep)
        chosen, tokens = tokens.keep(kept)
        return layer.feed_forward(attended[chosen], tokens.counts), tokens

    def _rank(
        self,
        layer: int,
        attended: Tensor,
        tokens: Tokens,
        context: Tensor,
        positions: Tensor,
        fixed_scores: Sequence[Tensor | None] | None,
        record: list[tuple[Tensor, Tensor]] | None = None,
    ) -> Tensor:
        """(B, width) significance of the tokens still present: the learned selector's scores (or
        the fixed ones) on context tokens, forced tokens above them (selector.ranking).
        context and positions are flat (B * T,), in the input layout. The selector's scores and
        where they are go to `record` in the input layout, (B, T) each, when it is given."""
        is_context = tokens.pad(context[tokens.origin, None]).squeeze(-1)  # (B, W), False at padding
        position = tokens.pad(positions[tokens.origin, None]).squeeze(-1)
        fixed = None if fixed_scores is None else fixed_scores[layer]  # None: the learned selector
        if fixed is not None:
            scores = tokens.pad(fixed.flatten()[tokens.origin, None].to(attended.dtype)).squeeze(-1)
        else:
            question = tokens.valid & ~is_context
            states = attended.to(self.selector.dtype)  # fp32 when the encoder runs in bf16
            scores = self.selector(layer, states, question, tokens.valid, packed=tokens)
            if record is not None:  # the scores and the tokens present, placed in the input layout
                placed = [tokens.restore(tokens.unpad(v[..., None])) for v in (scores, tokens.valid)]
                record.append(tuple(v.view(len(tokens.counts), -1) for v in placed))
        return ranking(scores.float(), is_context, tokens.valid, position)
