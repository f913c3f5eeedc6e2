"""The stages of the recipe, each a loss on one batch (train.py runs them), and the models they
train: the trainee, the teacher and how its vocabulary is aligned, the selector stage's frozen
encoder, and the head composed after intermediate-layer distillation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from . import checkpoint
from .distill import attention_loss, hidden_loss, layer_map, prediction_loss, span_loss
from .lengths import sample_layer_skips, sample_lengths
from .model import DynamicBertForQuestionAnswering, QAOutput
from .selector import Scorer, SelectorConfig, TokenSelector, answer_region, context_tokens, selector_loss
from .tokenizer import QATokenizer
from .train_settings import TrainingError, TrainSettings
from .transformers_qa import PROBE_TEXT, TransformersQA, VocabularyError, VocabularyMap


def align(student: QATokenizer, teacher_folder: Path) -> VocabularyMap:
    """The map from the student's token ids to the teacher's, checked on real text."""
    from transformers import AutoTokenizer

    teacher_tokenizer = AutoTokenizer.from_pretrained(teacher_folder)
    vocabulary = VocabularyMap.between(student.vocabulary, teacher_tokenizer)
    vocabulary.check_same_pieces(
        student.encode_text(PROBE_TEXT), teacher_tokenizer.encode(PROBE_TEXT, add_special_tokens=False)
    )
    return vocabulary


def load_teacher(settings: TrainSettings, student_tokenizer: QATokenizer) -> nn.Module | None:
    if not settings.teacher:
        return None
    teacher, tokenizer, folder = checkpoint.load_qa_model(
        settings.teacher, attentions=settings.stage == "intermediate"
    )
    if isinstance(teacher, TransformersQA):
        teacher.vocabulary = align(student_tokenizer, folder)
    elif tokenizer.vocabulary != student_tokenizer.vocabulary:
        raise VocabularyError(f"the teacher {folder} and the student have different vocabularies")
    return teacher.eval().requires_grad_(False)


@dataclass
class StepContext:
    settings: TrainSettings
    teacher: nn.Module | None
    layers: list[int] | None  # teacher layer for each student layer (intermediate)
    rng: np.random.Generator  # this step's randomness (LengthDrop), the same in every process


class Trainee(nn.Module):
    """What the optimizer trains: the model, and in intermediate-layer distillation the
    projection of student hidden states into the teacher's width (never saved with the model).

    Its forward pass is a whole training step's loss, so that DistributedDataParallel sees one
    forward per backward even when LengthDrop runs the model several times.
    """

    def __init__(self, model: nn.Module, projection: nn.Linear | None = None):
        super().__init__()
        self.model = model
        self.projection = projection

    def forward(self, batch: dict[str, Tensor], labels: dict[str, Tensor], ctx: StepContext) -> Tensor:
        return STEPS[ctx.settings.stage](self, batch, labels, ctx)


def set_dropout(model: nn.Module, p: float | None, attention: float | None = None) -> None:
    """Dropout probabilities: `p` everywhere, `attention` on the attention probabilities (`p`
    where it is not given); None leaves them as they are."""
    attention = p if attention is None else attention
    for module in model.modules():
        if p is not None and isinstance(module, nn.Dropout):
            module.p = p
        if attention is not None and hasattr(module, "attn_dropout"):
            module.attn_dropout = attention


def freeze_for_selector(model: DynamicBertForQuestionAnswering, settings: TrainSettings) -> None:
    """The selector stage trains the selector alone (a new one where the model has none) on the
    frozen encoder, whose dropout is off: its full pass is the target. --selector-layers trains
    only some layers' scorers."""
    layers = model.config.num_hidden_layers
    if model.selector is None:
        model.selector = TokenSelector(
            SelectorConfig(model.config.hidden_size, layers, settings.selector_width)
        )
    if any(n > layers for n in settings.selector_layers or ()):
        raise TrainingError(f"--selector-layers: the model has {layers} layers, counted from 1")
    model.requires_grad_(False)
    set_dropout(model, 0.0)
    for i in trained_scorers(settings, layers):
        if settings.selector_fresh:
            model.selector.scorers[i] = Scorer(model.selector.config)
        model.selector.scorers[i].requires_grad_(True)
        model.selector.scorers[i].dropout = settings.selector_dropout


def intermediate_targets(
    model: nn.Module, teacher: nn.Module | None, settings: TrainSettings
) -> tuple[nn.Linear | None, list[int] | None]:
    """Intermediate-layer distillation's projection of student states into the teacher's width
    (None where the widths match) and the teacher layer of each student layer; (None, None) for
    the other stages. A teacher whose layers do not split evenly over the student's is refused.
    """
    if settings.stage != "intermediate":
        return None, None
    ours, theirs = model.config.num_hidden_layers, teacher.config.num_hidden_layers
    if theirs % ours:
        fits = ", ".join(str(n) for n in range(1, theirs + 1) if theirs % n == 0)
        raise TrainingError(
            f"--stage intermediate: student layer m learns teacher layer m*L_T/L_S, so the teacher's "
            f"layer count must be a multiple of the student's; the {theirs}-layer teacher "
            f"{settings.teacher} fits students of {fits} layers, not the {ours} of {settings.model}: "
            "give a teacher or a student whose layer counts fit"
        )
    projection = None
    if teacher.config.hidden_size != model.config.hidden_size:
        projection = nn.Linear(model.config.hidden_size, teacher.config.hidden_size)
    return projection, layer_map(ours, theirs)


def trained_scorers(settings: TrainSettings, layers: int) -> list[int]:
    """The (0-based) layers whose scorers the selector stage trains."""
    if not settings.selector_layers:
        return list(range(layers))
    return sorted({n - 1 for n in settings.selector_layers})


# --- the stages --------------------------------------------------------------------------------


def finetune_step(trainee: Trainee, batch, labels, ctx: StepContext) -> Tensor:
    out = trainee.model(**batch)
    return span_loss(
        out.start_logits, out.end_logits, labels["starts"], labels["ends"], batch["attention_mask"].bool()
    )


def intermediate_step(trainee: Trainee, batch, labels, ctx: StepContext) -> Tensor:
    mask = batch["attention_mask"].bool()
    out = trainee.model(**batch, output_hidden_states=True, output_attentions=True)
    with torch.no_grad():
        target = ctx.teacher(**batch, output_hidden_states=True, output_attentions=True)
    loss = 0.0
    for m, t in enumerate(ctx.layers):
        hidden = (
            out.hidden_states[m] if trainee.projection is None else trainee.projection(out.hidden_states[m])
        )
        loss = loss + hidden_loss(hidden, target.hidden_states[t], mask)
        if m > 0:
            loss = loss + attention_loss(out.attentions[m - 1], target.attentions[t - 1], mask)
    return loss


def prediction_step(trainee: Trainee, batch, labels, ctx: StepContext) -> Tensor:
    out = trainee.model(**batch)
    with torch.no_grad():
        target = ctx.teacher(**batch)
    return prediction_loss(out, target, batch["attention_mask"].bool(), ctx.settings.temperature)


def lengthdrop_step(trainee: Trainee, batch, labels, ctx: StepContext) -> Tensor:
    mask = batch["attention_mask"].bool()
    full = trainee.model(**batch, output_attended=trainee.model.selector is not None)
    if ctx.teacher is not None:
        with torch.no_grad():
            teacher = ctx.teacher(**batch)
        loss = prediction_loss(full, teacher, mask, ctx.settings.temperature)
    else:
        loss = span_loss(full.start_logits, full.end_logits, labels["starts"], labels["ends"], mask)
    # in-place distillation: the sub-models learn the full pass's distributions, held fixed
    target = QAOutput(full.start_logits.detach(), full.end_logits.detach())
    layers = len(trainee.model.layers)
    configs = [ctx.settings.smallest_lengths(layers)]
    configs += [
        sample_lengths(ctx.rng, layers, ctx.settings.length_ratio) for _ in range(ctx.settings.random_configs)
    ]
    for lengths in configs:
        skip = sample_layer_skips(ctx.rng, layers, ctx.settings.layerdrop)
        loss = loss + prediction_loss(trainee.model(**batch, lengths=lengths, skip=skip), target, mask)
    if trainee.model.selector is not None:
        # the selector follows the encoder as it changes: it learns from the full pass's states
        loss = loss + _selector_loss(trainee.model, batch, full, *_selector_target(batch, full, ctx.settings))
    return loss


def selector_step(trainee: Trainee, batch, labels, ctx: StepContext) -> Tensor:
    with torch.no_grad():  # the encoder is frozen: its full pass gives the states and the targets
        full = trainee.model(**batch, output_attended=True)
    context, target = _selector_target(batch, full, ctx.settings)
    trained = trained_scorers(ctx.settings, len(full.attended))
    loss = _selector_loss(trainee.model, batch, full, context, target, trained)
    if ctx.settings.selector_cascade:
        loss = loss + _cascade_loss(trainee.model, batch, context, target, ctx)
    return loss


def _selector_target(batch, full: QAOutput, settings: TrainSettings) -> tuple[Tensor, Tensor]:
    """The context tokens (B, T), and where the full pass puts its answer over them
    (selector.answer_region): what every scorer learns to keep."""
    context = context_tokens(batch["attention_mask"], batch["token_type_ids"])
    target = answer_region(
        full.start_logits.detach(), full.end_logits.detach(), context, radius=settings.selector_radius
    )
    return context, target


def _selector_loss(
    model: DynamicBertForQuestionAnswering,
    batch,
    full: QAOutput,
    context: Tensor,
    target: Tensor,
    layers: Sequence[int] | None = None,
) -> Tensor:
    """Each layer's scorer (of `layers`, default all), on the full pass's post-attention states,
    against the target; the mean over layers."""
    real = batch["attention_mask"].bool()
    question = real & ~context
    layers = range(len(full.attended)) if layers is None else layers
    losses = [
        selector_loss(model.selector(i, full.attended[i].detach(), question, real), target, context)
        for i in layers
    ]
    return torch.stack(losses).mean()


def _cascade_loss(
    model: DynamicBertForQuestionAnswering, batch, context: Tensor, target: Tensor, ctx: StepContext
) -> Tensor:
    """The scorers on their own cascade: random sub-models (LengthDrop's configurations, each
    layer keeping between --length-ratio and all of what the previous one kept) drop tokens by
    the selector, and each dropping layer's scores on the tokens still present are trained
    against the full pass's answer region among those tokens. The full pass's states alone
    (teacher forcing) never show a scorer what earlier layers' choices leave it."""
    losses = []
    for _ in range(ctx.settings.selector_cascade):
        lengths = sample_lengths(ctx.rng, len(model.layers), ctx.settings.length_ratio)
        for scores, present in model(**batch, lengths=lengths, output_scores=True).scores:
            if not scores.requires_grad:  # a scorer --selector-layers leaves as it is (the encoder is frozen)
                continue
            here = target * present
            mass = here.sum(-1, keepdim=True)
            # rows whose answer region is gone teach nothing: nothing left there to keep
            rows = context & present & (mass > 0)
            losses.append(selector_loss(scores, here / mass.clamp(min=1e-30), rows))
    return torch.stack(losses).mean() if losses else target.new_zeros(())


STEPS = {
    "finetune": finetune_step,
    "intermediate": intermediate_step,
    "prediction": prediction_step,
    "lengthdrop": lengthdrop_step,
    "selector": selector_step,
}


def unwrap(trainee: nn.Module) -> Trainee:
    """The Trainee inside DistributedDataParallel, or itself."""
    return trainee.module if isinstance(trainee, nn.parallel.DistributedDataParallel) else trainee


def compose_head(
    model: DynamicBertForQuestionAnswering, teacher: nn.Module, projection: nn.Linear | None
) -> None:
    """After intermediate-layer distillation, the student's QA head becomes the teacher's head
    applied to projected student states: logits = W_t (P h + b_P) + b_t. Where the student
    matches the teacher, it then answers as the teacher does, a good start for the next stage."""
    head = teacher.head() if isinstance(teacher, TransformersQA) else getattr(teacher, "qa_head", None)
    if head is None:
        return
    with torch.no_grad():
        weight, bias = head.weight.float(), head.bias.float()
        if projection is not None:
            weight, bias = weight @ projection.weight.float(), weight @ projection.bias.float() + bias
        model.qa_head.weight.copy_(weight)
        model.qa_head.bias.copy_(bias)
