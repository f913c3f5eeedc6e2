"""The learned token selector: which context tokens a dropping layer keeps (docs/selector.md).

Attention received (PoWER-BERT's score) was made for classification; in question answering it
drops the answer span in the first layers, and once the answer is dropped it is gone. The
selector replaces it where a model has one: at each dropping layer a small scorer reads every
token's state after that layer's attention, beside the mean state of the question, and ranks the
context tokens. [CLS], the question and the separators always stay (they count against the
layer's share), so the scorer ranks context tokens only.

It is trained with the encoder frozen, on the full model's own start and end distributions: the
target of a window is where the full model puts its answer, widened a little on both sides
(`answer_region`). It is saved beside the model as `selector.safetensors`, which plain
transformers ignores.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

FILENAME = "selector.safetensors"
FORMAT = "dynamic-tinybert-selector-1"
# forced tokens ([CLS], the question, the separators) score above any scorer output; among
# themselves the earlier one first, so that a share smaller than the question keeps its start
FORCED = 1e6
SCORE_LIMIT = 1e4


class Packing(Protocol):
    """Where packed tokens (N, .) sit in a padded (B, W, .) view: the model's Tokens."""

    starts: Tensor  # (B,) the packed index of each row's first token

    def pad(self, x: Tensor) -> Tensor:
        """(N, k) -> (B, W, k), zeros at padding."""


def _as_it_is(x: Tensor) -> Tensor:
    return x


class SelectorError(ValueError):
    """A selector file that is unreadable or does not fit its model, or a selector that is asked
    for on a model without one."""


@dataclass(frozen=True)
class SelectorConfig:
    hidden_size: int  # d of the encoder the selector reads
    num_layers: int  # one scorer per encoder layer
    width: int = 64  # each scorer's hidden layer
    match_heads: int = 4  # question-matching heads
    match_size: int = 16  # dimensions of each matching head
    pools: tuple[int, ...] = (4, 16)  # the matches are also max-pooled over +-p neighbours, for each p

    @property
    def match_features(self) -> int:
        return self.match_heads * (1 + len(self.pools))

    @property
    def macs_per_token(self) -> int:
        """Multiply-adds of scoring one token at a dropping layer, counted from above: its MLP,
        its matching projection, its similarity to up to 64 question tokens, and as much again
        for the projection of a question token.

        >>> SelectorConfig(384, 6).macs_per_token
        78656
        """
        d, w, matching = self.hidden_size, self.width, self.match_heads * self.match_size
        return w * (d + 1 + self.match_features) + matching * (2 * d + MAX_QUESTION)

    def metadata(self) -> dict[str, str]:
        return {
            "hidden_size": str(self.hidden_size),
            "num_layers": str(self.num_layers),
            "width": str(self.width),
            "match_heads": str(self.match_heads),
            "match_size": str(self.match_size),
            "pools": ",".join(map(str, self.pools)),
        }

    @classmethod
    def from_metadata(cls, metadata: dict[str, str]) -> SelectorConfig:
        """
        >>> SelectorConfig.from_metadata(SelectorConfig(8, 2, pools=(3,)).metadata())
        SelectorConfig(hidden_size=8, num_layers=2, width=64, match_heads=4, match_size=16, pools=(3,))
        """
        return cls(
            int(metadata["hidden_size"]),
            int(metadata["num_layers"]),
            int(metadata["width"]),
            int(metadata["match_heads"]),
            int(metadata["match_size"]),
            tuple(int(p) for p in metadata["pools"].split(",") if p),
        )


# question tokens the cost model counts for a window's matching. SQuAD dev's questions have 38
# at most (the training files' 127); a window may hold up to WindowSettings.max_query_length,
# and a question over 64 tokens costs a little more than counted (its windows' FLOPs too).
MAX_QUESTION = 64


class Scorer(nn.Module):
    """One layer's scorer: a one-hidden-layer MLP on a token's state h, conditioned on

      - the question's mean state q, and
      - how well the token matches the question: per matching head, the largest similarity
        (A h) . (B h_j) over the question's tokens j, as it is and max-pooled over the token's
        neighbours (the answer is usually near the words the question asks about).

    score = w . gelu(W_h h + W_q q + W_m m) + c, m the matching features.
    """

    def __init__(self, config: SelectorConfig):
        super().__init__()
        d, w = config.hidden_size, config.width
        self.heads, self.pools = config.match_heads, config.pools
        self.token = nn.Linear(d, w)
        self.question = nn.Linear(d, w, bias=False)
        self.match_token = nn.Linear(d, config.match_heads * config.match_size)
        self.match_question = nn.Linear(d, config.match_heads * config.match_size)
        self.match = nn.Linear(config.match_features, w, bias=False)
        self.out = nn.Linear(w, 1)
        self.dropout = 0.0  # on the hidden layer, in training (--selector-dropout); not saved

    def forward(
        self, states: Tensor, question: Tensor, valid: Tensor, packed: Packing | None = None
    ) -> Tensor:
        """states (B, W, d); question, valid (B, W) True on the question's tokens and on real
        tokens -> scores (B, W). With `packed`, states are the (N, d) real tokens packed row after
        row (the model's layout), so the per-token maps spend no work on padding; their outputs
        are placed in the (B, W) view as `packed` says."""
        # the question's tokens gathered to the front of each row: (B, Q, d), `asked` True on them
        order = (
            (~question).to(torch.int32).argsort(dim=1, stable=True)[:, : max(1, int(question.sum(1).max()))]
        )
        asked = question.gather(1, order)  # (B, Q)
        if packed is None:
            questions = states.gather(1, order[..., None].expand(-1, -1, states.shape[-1]))
            place = _as_it_is
        else:  # row b's slot j is packed token starts[b] + j; slots past a row's end are not asked
            questions = states[(packed.starts[:, None] + order).clamp(max=states.shape[0] - 1)]
            place = packed.pad
        weights = asked.to(states.dtype)[..., None]
        mean = (questions * weights).sum(1) / weights.sum(1).clamp(min=1)  # (B, d)

        B, W = question.shape
        a = place(self.match_token(states)).view(B, W, self.heads, -1).transpose(1, 2)  # (B, H, W, k)
        b = (
            self.match_question(questions).view(B, -1, self.heads, a.shape[-1]).transpose(1, 2)
        )  # (B, H, Q, k)
        similarity = (a @ b.transpose(-1, -2)) * a.shape[-1] ** -0.5  # (B, H, W, Q)
        best = similarity.masked_fill(~asked[:, None, None, :], -1e4).amax(-1)  # (B, H, W)
        best = best.masked_fill(~valid[:, None, :], -1e4)  # padding never wins a neighbour's pool
        matches = [best] + [F.max_pool1d(best, 2 * p + 1, stride=1, padding=p) for p in self.pools]
        m = torch.cat(matches, 1).transpose(1, 2)  # (B, W, H * (1 + pools))

        hidden = F.gelu(place(self.token(states)) + self.question(mean)[:, None, :] + self.match(m))
        hidden = F.dropout(hidden, self.dropout, self.training)
        return self.out(hidden).squeeze(-1)


class TokenSelector(nn.Module):
    def __init__(self, config: SelectorConfig):
        super().__init__()
        self.config = config
        self.scorers = nn.ModuleList(Scorer(config) for _ in range(config.num_layers))

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def forward(
        self, layer: int, states: Tensor, question: Tensor, valid: Tensor, packed: Packing | None = None
    ) -> Tensor:
        """Raw scores (B, W) of the tokens `states` (B, W, d) at `layer` (0-based); question and
        valid (B, W) are True on the question's tokens and on real tokens. `packed`: states are
        packed (N, d), as Scorer.forward says."""
        return self.scorers[layer](states, question, valid, packed)

    def save(self, folder: Path) -> Path:
        path = Path(folder) / FILENAME
        state = {k: v.detach().float().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, path, metadata={"format": FORMAT, **self.config.metadata()})
        return path

    @classmethod
    def load(cls, folder: Path, hidden_size: int, num_layers: int) -> TokenSelector | None:
        """The selector saved in a model folder, checked against its model; None when there is none."""
        path = Path(folder) / FILENAME
        if not path.is_file():
            return None
        try:
            with safe_open(path, framework="pt") as f:
                metadata = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iterator)
            config = SelectorConfig.from_metadata(metadata)
        except Exception as error:  # truncated file, foreign file without our metadata, ...
            raise SelectorError(
                f"cannot read {path} ({type(error).__name__}: {error}); retrain it with "
                "`dynamic-tinybert train --stage selector` or remove the file"
            ) from None
        if metadata.get("format") != FORMAT or (config.hidden_size, config.num_layers) != (
            hidden_size,
            num_layers,
        ):
            raise SelectorError(
                f"{path} does not match its model: it scores {config.num_layers} layers of width "
                f"{config.hidden_size}, the model has {num_layers} layers of width {hidden_size}; retrain it "
                "with `dynamic-tinybert train --stage selector` or remove the file"
            )
        selector = cls(config)
        expected = selector.state_dict()
        if set(state) != set(expected) or any(state[k].shape != expected[k].shape for k in expected):
            raise SelectorError(f"{path} holds weights of another shape than its metadata says; retrain it")
        selector.load_state_dict(state)
        return selector


def context_tokens(attention_mask: Tensor, token_type_ids: Tensor) -> Tensor:
    """(B, T) True on the context's tokens: segment 1 without the final [SEP].

    [CLS] question [SEP] is segment 0, context [SEP] segment 1 (BERT's pair encoding).
    Example: types [0, 0, 0, 1, 1, 1], mask all ones -> [F, F, F, T, T, F].
    """
    real = attention_mask.bool()
    last = real.sum(1, keepdim=True) - 1  # (B, 1) position of each row's final [SEP]
    positions = torch.arange(real.shape[1], device=real.device)[None, :]
    return real & (token_type_ids == 1) & (positions != last)


def ranking(scores: Tensor, context: Tensor, valid: Tensor, positions: Tensor) -> Tensor:
    """The significance a dropping layer keeps tokens by: context tokens by their (bounded)
    scores, forced tokens above them all in their order, padding at -inf. All (B, W).

    >>> ranking(torch.tensor([[5.0, 2.0, 9.0, 0.0]]), torch.tensor([[False, True, True, False]]),
    ...         torch.tensor([[True, True, True, False]]), torch.tensor([[0, 1, 2, 3]])).tolist()
    [[1000000.0, 2.0, 9.0, -inf]]
    """
    forced = FORCED - positions.to(scores.dtype)
    ranked = torch.where(context, scores.clamp(-SCORE_LIMIT, SCORE_LIMIT), forced)
    return ranked.masked_fill(~valid, -torch.inf)


def margin_kept(ranked: Tensor, margin: float) -> Tensor:
    """(B, W) True on the tokens a row keeps under a margin: its forced tokens, and the context
    tokens scoring within `margin` of its best context token. `ranked` is ranking()'s (B, W) output.

    A fixed share keeps as many tokens in a window whose selector is sure of one span as in one
    where several spans score alike; a margin keeps few in the first and many in the second.

    >>> context = torch.tensor([[False, True, True, True, False]])
    >>> ranked = ranking(torch.tensor([[0.0, 5.0, 4.0, 1.0, 0.0]]), context,
    ...                  torch.tensor([[True, True, True, True, False]]), torch.arange(5)[None])
    >>> margin_kept(ranked, 1.5).tolist(), margin_kept(ranked, 9.0).sum(1).tolist()
    ([[True, True, True, False, False]], [4])
    """
    forced = ranked > SCORE_LIMIT
    context = torch.isfinite(ranked) & ~forced
    best = ranked.masked_fill(~context, -torch.inf).amax(1, keepdim=True)  # (B, 1)
    return forced | (context & (ranked >= best - margin))


def answer_region(
    start_logits: Tensor, end_logits: Tensor, context: Tensor, max_answer_len: int = 30, radius: float = 8.0
) -> Tensor:
    """Where a model puts its answer, widened: the target distribution (B, T) over context tokens.

    From the start and end distributions over the context, the probability that each token lies
    inside the answer (over spans s <= e < s + max_answer_len, P(s, e) ~ p_start(s) p_end(e)),
    spread to its neighbours with weights exp(-distance / radius), normalised per row. Rows
    without context tokens are all zeros.
    Example: all of the start and end probability on token 5 gives a peak at 5 that halves about
    every 5.5 tokens on either side.
    """
    neg = torch.finfo(torch.float32).min
    p_start = start_logits.float().masked_fill(~context, neg).softmax(-1)  # (B, T)
    p_end = end_logits.float().masked_fill(~context, neg).softmax(-1)
    T = p_start.shape[1]
    i = torch.arange(T, device=p_start.device)
    allowed = (i[None, :] >= i[:, None]) & (i[None, :] < i[:, None] + max_answer_len)  # (s, e)
    spans = p_start[:, :, None] * p_end[:, None, :] * allowed  # (B, s, e)
    spans = spans / spans.sum((1, 2), keepdim=True).clamp(min=1e-30)
    # token t is inside span (s, e) when s <= t <= e: sum over s <= t of P(s, e >= t)
    ends_from = spans.flip(2).cumsum(2).flip(2)  # (B, s, t): P(s, e >= t)
    inside = (ends_from * (i[:, None] <= i[None, :])).sum(1)  # (B, t)
    spread = torch.exp(-(i[:, None] - i[None, :]).abs().float() / radius)  # (T, T)
    region = (inside @ spread) * context
    return region / region.sum(-1, keepdim=True).clamp(min=1e-30)


def selector_loss(scores: Tensor, target: Tensor, context: Tensor) -> Tensor:
    """Cross-entropy between the softmax of the scores over each row's context tokens and the
    target distribution, over rows that have context tokens.

    >>> c = torch.tensor([[False, True, True]])
    >>> round(float(selector_loss(torch.tensor([[0.0, 9.0, -9.0]]), torch.tensor([[0.0, 1.0, 0.0]]), c)), 4)
    0.0
    """
    log_p = scores.float().masked_fill(~context, torch.finfo(torch.float32).min).log_softmax(-1)
    rows = context.any(-1)
    loss = -(target * log_p.masked_fill(~context, 0.0)).sum(-1)
    return loss[rows].mean() if rows.any() else scores.sum() * 0.0
