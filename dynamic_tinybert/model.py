"""The BERT encoder with drop-and-restore token reduction, and its QA head (DESIGN.md section 2).

At full length this computes exactly what transformers' BertForQuestionAnswering computes. Given
a length configuration, a layer that keeps fewer tokens than it received
  1. runs self-attention over all of its tokens,
  2. scores each token by the attention it receives, summed over heads and real query positions,
  3. sends only the top-scoring tokens through the feed-forward block and on to the next layer,
  4. leaves the dropped tokens with their latest hidden state, which is written back at their
     original positions after the last layer ("restore"), so the QA head sees every token.
Layers that keep every token use fused attention; only dropping layers build the attention
probabilities, since the scores need them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ModelConfig
from .lengths import Lengths, kept_tokens, validate_lengths

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


class Embeddings(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.word = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor) -> Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        h = self.word(input_ids) + self.position(positions) + self.token_type(token_type_ids)
        return self.dropout(self.norm(h))


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

    def attend(self, h: Tensor, valid: Tensor, output: str = "none") -> tuple[Tensor, Tensor | None]:
        """Self-attention block over all tokens of h (B, T, d); padding keys (valid False) are masked.

        Returns the block's output (B, T, d) and, by `output`:
          "none": nothing more, using fused attention;
          "significance": (B, T) the attention each token receives, summed over heads and real
            query positions (PoWER-BERT's score), before dropout;
          "probs": (B, H, T, T) the attention probabilities before dropout.
        """
        B, T, d = h.shape
        q, k, v = (
            p(h).view(B, T, self.num_heads, -1).transpose(1, 2) for p in (self.query, self.key, self.value)
        )
        # (B, H, T, dh) each
        dropout_p = self.attn_dropout if self.training else 0.0
        key_mask = None if bool(valid.all()) else valid[:, None, None, :]  # (B, 1, 1, T)
        extra = None
        if output == "none":
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=dropout_p)
        else:
            context, extra = _explicit_attention(q, k, v, valid, key_mask, dropout_p, output == "probs")
        context = context.transpose(1, 2).reshape(B, T, d)
        return self.attn_norm(h + self.dropout(self.attn_out(context))), extra

    def feed_forward(self, a: Tensor) -> Tensor:
        return self.ffn_norm(a + self.dropout(self.ffn_out(self.act(self.ffn_in(a)))))

    def forward(self, h: Tensor, valid: Tensor) -> Tensor:
        return self.feed_forward(self.attend(h, valid)[0])


# elements of one block of attention scores (8 MB in fp32): blocks that stay in cache keep the
# explicit attention of dropping layers close to the speed of fused attention at 384 tokens
_SCORE_BLOCK = 2**21


def _explicit_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    valid: Tensor,
    key_mask: Tensor | None,
    dropout_p: float,
    keep_probs: bool,
) -> tuple[Tensor, Tensor]:
    """softmax(q k^T / sqrt(dh)) v, computed a few batch rows at a time, with either the
    probabilities (B, H, T, T) or the significance of each key (B, T) beside it."""
    B, H, T, dh = q.shape
    q = q * dh**-0.5
    bias = (
        None
        if key_mask is None
        else torch.zeros(key_mask.shape, dtype=q.dtype, device=q.device).masked_fill(
            ~key_mask, torch.finfo(q.dtype).min
        )
    )
    real_queries = valid.to(q.dtype)[:, None, None, :]  # (B, 1, 1, T)
    step = B if keep_probs else max(1, _SCORE_BLOCK // (H * T * T))
    contexts, extras = [], []
    for rows in (slice(i, i + step) for i in range(0, B, step)):
        scores = q[rows] @ k[rows].transpose(-1, -2)  # (b, H, T, T)
        if bias is not None:
            scores = scores + bias[rows]
        probs = scores.softmax(dim=-1)
        extras.append(probs if keep_probs else (real_queries[rows] @ probs).sum(dim=(1, 2)))
        contexts.append(F.dropout(probs, dropout_p, training=dropout_p > 0) @ v[rows])
    return torch.cat(contexts), torch.cat(extras)


def select_tokens(significance: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
    """Slots of the tokens each row keeps: its `keep[b]` most significant ones, in their order.

    significance (B, T) is -inf at padding; keep (B,) counts. Returns `index` (B, K) into the
    current slots, K = max(keep), and `valid` (B, K), False where a shorter row is padded.
    Example: significance [[.1, .9, .5, .7]], keep [2] -> index [[1, 3]]: the two best, in order.
    """
    K = int(keep.max())
    top = significance.topk(K, dim=1).indices  # (B, K), best first
    valid = torch.arange(K, device=keep.device)[None, :] < keep[:, None]
    # original order for the kept tokens, padding slots last; the order does not change the
    # result (positions were added at the input) but makes a row alone and in a batch agree
    index = top.masked_fill(~valid, significance.shape[1]).sort(dim=1).values
    return index.masked_fill(~valid, 0), valid


def _gather(x: Tensor, index: Tensor) -> Tensor:
    """x (B, T, d) at index (B, K) -> (B, K, d)."""
    return x.gather(1, index[:, :, None].expand(-1, -1, x.shape[-1]))


class DynamicBertForQuestionAnswering(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))
        self.qa_head = nn.Linear(config.hidden_size, 2)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        """BERT's initialisation, for heads that a checkpoint does not provide."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.config.initializer_range)
        if isinstance(module, nn.Linear):
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def keep_plan(self, n_tokens: Tensor, lengths: Lengths | None) -> list[Tensor | None]:
        """Per layer, the tokens each row keeps (B,), or None where the layer keeps them all."""
        plan: list[Tensor | None] = []
        previous = n_tokens.tolist()
        for share in lengths or (1.0,) * self.config.num_hidden_layers:
            keep = [kept_tokens(n, share) for n in n_tokens.tolist()]
            plan.append(None if keep == previous else torch.tensor(keep, device=n_tokens.device))
            previous = keep
        return plan

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        lengths: Sequence[float] | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> QAOutput:
        """Start and end logits (B, T) for every input position.

        lengths: one share per layer (see lengths.py); None runs the full model.
        """
        lengths = validate_lengths(lengths, self.config.num_hidden_layers)
        if lengths is not None and (output_hidden_states or output_attentions):
            raise ValueError("hidden states and attentions are only returned at full length")
        B, T = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        valid = attention_mask.bool()  # (B, T): which slots hold real tokens

        h = self.embeddings(input_ids, token_type_ids)  # (B, T, d)
        hidden_states = [h] if output_hidden_states else None
        attentions = [] if output_attentions else None
        plan = self.keep_plan(valid.sum(1), lengths)
        restored = positions = None
        if any(keep is not None for keep in plan):
            # restored holds every token's latest state at its original position; one extra
            # column T takes the writes of padding slots, and is cut off at the end
            restored = h.new_zeros(B, T + 1, h.shape[-1])
            positions = torch.arange(T, device=h.device).expand(B, T).masked_fill(~valid, T)

        for layer, keep in zip(self.layers, plan, strict=True):
            if keep is None:
                if output_attentions:
                    attended, probs = layer.attend(h, valid, output="probs")
                    attentions.append(probs)
                    h = layer.feed_forward(attended)
                else:
                    h = layer(h, valid)
            else:
                attended, significance = layer.attend(h, valid, output="significance")
                index, valid = select_tokens(significance.masked_fill(~valid, -math.inf), keep)
                restored = restored.scatter(1, positions[:, :, None].expand_as(h), h)
                positions = positions.gather(1, index).masked_fill(~valid, T)
                h = layer.feed_forward(_gather(attended, index))
            if output_hidden_states:
                hidden_states.append(h)

        if restored is not None:
            h = restored.scatter(1, positions[:, :, None].expand_as(h), h)[:, :T]
        start_logits, end_logits = self.qa_head(h).unbind(dim=-1)
        return QAOutput(start_logits, end_logits, hidden_states, attentions)
