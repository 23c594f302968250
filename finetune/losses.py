"""Batched per-sample loss engine: mean cross-entropy of each sample's response tokens.

A sample is ``(token_ids: LongTensor[1, T], prompt_len)``. Its loss is exactly what
``model(ids, labels=labels).loss`` gives with ``labels = ids.clone(); labels[:, :prompt_len] = -100``:
Hugging Face shifts the labels, so position ``t`` predicts token ``t + 1``, the scored targets are
tokens ``prompt_len .. T-1`` and they are predicted from positions ``prompt_len-1 .. T-2``.

``compute_losses`` gets the same numbers faster: samples are sorted by length and packed into
right-padded batches under a token budget, the decoder body runs once per batch, and the LM head
(a ``hidden x vocab`` matmul, the costliest layer of small models) is applied only to the hidden
states of the scored positions instead of to every position, prompt included.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

Sample = tuple[torch.Tensor, int]
LogitsFn = Callable[[torch.Tensor], torch.Tensor]

# Padded tokens (batch size x longest sample) per forward, by default. On 2 CPU threads batches past
# ~2-4k tokens get slower (activations fall out of cache); a GPU wants big batches to amortise launches.
CPU_TOKEN_BUDGET = 2048
ACCELERATOR_TOKEN_BUDGET = 8192
DEFAULT_MAX_BATCH_SIZE = 64
# Logit elements (scored positions x vocab) per LM-head matmul + cross-entropy. On CPU a chunk that
# stays near the cache (256 rows at a 32k vocab) makes head+CE ~1.4x faster than one big chunk; on
# accelerators bigger chunks keep the matmul efficient while bounding the float32 logits buffer.
CPU_LOGITS_CHUNK = 1 << 22
ACCELERATOR_LOGITS_CHUNK = 1 << 28

# ``model_type``s whose ``*ForCausalLM.forward`` computes ``lm_head(base_model(...)[0])`` and then at
# most the config-driven rescaling applied by ``_logit_postprocess``. Every other model takes the
# generic path: a full batched forward whose logits are gathered at the scored positions.
_SPLIT_HEAD_TYPES = frozenset(
    {
        "llama", "mistral", "mixtral", "ministral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma",
        "gemma2", "gemma3_text", "cohere", "cohere2", "granite", "granitemoe", "phi", "phi3", "stablelm",
        "gpt2", "gpt_neox", "gptj", "olmo", "olmo2", "starcoder2", "falcon", "smollm3", "deepseek_v3",
    }
)  # fmt: skip


def _logit_postprocess(config: object) -> LogitsFn | None:
    """The rescaling some architectures apply to the head's output (Gemma-2/3, Cohere, Granite)."""
    softcap = getattr(config, "final_logit_softcapping", None)
    scale = getattr(config, "logit_scale", None)
    divisor = getattr(config, "logits_scaling", None)
    if softcap:
        return lambda logits: torch.tanh(logits / softcap) * softcap
    if scale and scale != 1:
        return lambda logits: logits * scale
    if divisor and divisor != 1:
        return lambda logits: logits / divisor
    return None


def _split_head(model: nn.Module) -> tuple[nn.Module, LogitsFn] | None:
    """(decoder body, head + post-processing) when the model is known to split that way, else None."""
    if _sharded(model):
        return None
    config = getattr(model, "config", None)
    body = getattr(model, "base_model", model)
    getter = getattr(model, "get_output_embeddings", None)
    head = getter() if callable(getter) else None
    if getattr(config, "model_type", None) not in _SPLIT_HEAD_TYPES or body is model:
        return None
    if not isinstance(head, nn.Module):
        return None
    post = _logit_postprocess(config)
    if post is None:
        return body, head
    return body, lambda hidden: post(head(hidden))


def _sharded(model: nn.Module) -> bool:
    """Whether ``model`` is FSDP-sharded (the miner's FSDP evaluation): its body can't run on its own,
    since the root module gathers the embedding and head weights around the whole model's forward."""
    from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel

    return isinstance(model, FSDPModule | FullyShardedDataParallel)


def _vocab_limit(model: nn.Module) -> int | None:
    """Number of rows of the input embedding table, if the model exposes it."""
    getter = getattr(model, "get_input_embeddings", None)
    embeddings = getter() if callable(getter) else None
    rows = getattr(embeddings, "num_embeddings", None)
    return rows if isinstance(rows, int) else None


def _scorable(ids: torch.Tensor, prompt_len: int, vocab: int | None) -> bool:
    """Whether a sample has at least one response token and only in-vocabulary ids.

    Out-of-range ids are rejected up front: on CUDA they trip a device-side assert that would
    poison the whole context instead of raising a catchable error for one batch.
    """
    if not isinstance(ids, torch.Tensor) or ids.dim() not in (1, 2) or (ids.dim() == 2 and ids.shape[0] != 1):
        return False
    if ids.is_floating_point() or ids.is_complex() or not 0 < prompt_len < ids.numel():
        return False
    return vocab is None or (int(ids.min()) >= 0 and int(ids.max()) < vocab)


def _buckets(order: Sequence[int], lengths: Sequence[int], budget: int, max_size: int) -> Iterator[list[int]]:
    """Split ``order`` (indices sorted by decreasing length) into consecutive batches.

    A batch is padded to its first (longest) member, so it costs ``len(batch) * lengths[batch[0]]``
    tokens; it grows while that stays within ``budget`` and ``max_size``. A sample longer than the
    budget forms a batch of its own.
    """
    batch: list[int] = []
    for index in order:
        if batch and ((len(batch) + 1) * lengths[batch[0]] > budget or len(batch) >= max_size):
            yield batch
            batch = []
        batch.append(index)
    if batch:
        yield batch


@dataclass(frozen=True)
class ResponseBatch:
    """Samples laid out as one right-padded batch, with the positions whose loss counts.

    With lengths ``L_b`` and prompt lengths ``p_b``, row ``b`` of the ``[B, W]`` ``ids`` holds its sample
    in columns ``0 .. L_b-1`` and padding (id 0) after it. The scored positions are the columns ``t``
    with ``p_b - 1 <= t < L_b - 1``; the target at ``(b, t)`` is ``ids[b, t+1]``. Boolean-mask indexing
    returns them row-major, i.e. sample by sample, so the segment (sample) of every scored position is
    ``repeat_interleave(arange(B), L - p)``. Attention is causal, so a real token never sees the padding
    to its right.
    """

    ids: torch.Tensor
    lengths: torch.Tensor
    scored: torch.Tensor
    targets: torch.Tensor
    segments: torch.Tensor
    counts: torch.Tensor

    @classmethod
    def of(cls, samples: Sequence[Sample], device: torch.device) -> ResponseBatch:
        lengths = torch.tensor([ids.numel() for ids, _ in samples], device=device)
        prompts = torch.tensor([prompt_len for _, prompt_len in samples], device=device)
        ids = torch.zeros(len(samples), int(lengths.max()), dtype=torch.long)
        for row, (sample_ids, _) in enumerate(samples):
            ids[row, : sample_ids.numel()] = sample_ids.reshape(-1)
        ids = ids.to(device)
        columns = torch.arange(ids.shape[1], device=device)
        scored = (columns >= prompts[:, None] - 1) & (columns < lengths[:, None] - 1)  # [B, W]
        targets = ids[:, 1:][scored[:, :-1]]  # column W-1 is never scored: drop it, then shift by one
        counts = lengths - prompts
        segments = torch.repeat_interleave(torch.arange(len(samples), device=device), counts)
        return cls(ids, lengths, scored, targets, segments, counts)

    @property
    def attention_mask(self) -> torch.Tensor:
        columns = torch.arange(self.ids.shape[1], device=self.ids.device)
        return (columns < self.lengths[:, None]).long()


def response_losses(
    batch: ResponseBatch, rows: torch.Tensor, to_logits: LogitsFn, *, vocab: int, logits_chunk: int
) -> torch.Tensor:
    """Mean cross-entropy of each sample's response tokens, ``[B]`` float32, from ``rows``: the hidden
    states (or logits, with ``to_logits`` the identity) of the scored positions, in ``batch`` order.

    The logits are made ``logits_chunk // vocab`` rows at a time and cast to float32 for the
    cross-entropy, as Hugging Face does. Differentiable: the training loss is this, with gradients.
    """
    chunk = max(1, logits_chunk // vocab)
    token_losses = torch.empty(rows.shape[0], dtype=torch.float32, device=rows.device)
    for start in range(0, rows.shape[0], chunk):
        stop = start + chunk
        logits = to_logits(rows[start:stop]).float()
        token_losses[start:stop] = F.cross_entropy(logits, batch.targets[start:stop], reduction="none")
    sums = torch.zeros(batch.counts.shape[0], dtype=torch.float32, device=rows.device)
    return sums.index_add(0, batch.segments, token_losses) / batch.counts


def training_loss(model: nn.Module, samples: Sequence[Sample], device: torch.device) -> torch.Tensor:
    """The miner's training objective on a micro-batch, with gradients: the validator's per-sample loss
    (:func:`response_losses` on a :class:`ResponseBatch`, response tokens only), averaged over samples.

    ``model`` is called as a whole (``model(input_ids=, attention_mask=)``) so that a DDP or FSDP
    wrapper sees the forward pass it has to synchronise; its logits are taken at the scored positions.
    Every sample needs a response token (``0 < prompt_len < T``).
    """
    batch = ResponseBatch.of(samples, device)
    logits = model(input_ids=batch.ids, attention_mask=batch.attention_mask, use_cache=False).logits
    rows = logits[batch.scored]
    chunk = ACCELERATOR_LOGITS_CHUNK
    return response_losses(batch, rows, _identity, vocab=rows.shape[-1], logits_chunk=chunk).mean()


@dataclass(frozen=True)
class _Scorer:
    """What scoring a batch needs: the model, its optional (body, head) split, device, logits chunk."""

    model: nn.Module
    split: tuple[nn.Module, LogitsFn] | None
    device: torch.device
    logits_chunk: int

    def score(self, samples: Sequence[Sample]) -> list[float]:
        """Mean response cross-entropy of each sample, scored together in one right-padded batch
        (:class:`ResponseBatch`).

        The split path (known causal decoders) passes no attention mask, letting SDPA use its causal
        kernel, which skips the upper triangle (an explicit padding mask costs ~10% on CPU); the
        default positions ``0 .. W-1`` are the sample's own. The generic path keeps the mask.
        """
        batch = ResponseBatch.of(samples, self.device)
        rows: torch.Tensor
        to_logits: LogitsFn
        if self.split is not None:
            body, to_logits = self.split
            rows = body(input_ids=batch.ids, use_cache=False)[0][batch.scored]  # [N, hidden]
        else:
            output = self.model(input_ids=batch.ids, attention_mask=batch.attention_mask, use_cache=False)
            rows, to_logits = output.logits[batch.scored], _identity  # [N, V]
        vocab = int(getattr(getattr(self.model, "config", None), "vocab_size", 0) or rows.shape[1])
        losses = response_losses(batch, rows, to_logits, vocab=vocab, logits_chunk=self.logits_chunk)
        return losses.tolist()

    def score_or_split(self, samples: Sequence[Sample]) -> list[float]:
        """Score a batch; if it raises, score its samples one by one (``inf`` for those that fail)."""
        try:
            return self.score(samples)
        except Exception:  # noqa: BLE001 - a miner's model may fail in any way; that must cost only its samples
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            if len(samples) == 1:
                return [math.inf]
            return [loss for sample in samples for loss in self.score_or_split([sample])]


def _identity(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def _finite(value: float) -> float:
    return value if math.isfinite(value) else math.inf


def compute_losses(
    model: nn.Module,
    samples: Sequence[Sample],
    device: torch.device | str,
    *,
    token_budget: int | None = None,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    logits_chunk: int | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> list[float]:
    """Per-sample mean response cross-entropy, in input order; ``inf`` where a sample can't be scored.

    Equal (to float rounding) to ``compute_losses_reference``. A sample is unscorable when it has no
    response token (``prompt_len <= 0`` or ``>= T``), out-of-vocabulary ids, a non-finite loss, or
    fails on its own; a batch that raises is retried one sample at a time, so one bad sample costs
    no others. The model runs in eval mode (restored afterwards); global torch settings are untouched.

    ``token_budget`` caps ``batch size x longest sample`` per forward and ``max_batch_size`` the
    samples per batch; ``logits_chunk`` caps the logits elements (positions x vocab) computed at once.
    ``None`` picks the device's default (``CPU_*`` or ``ACCELERATOR_*`` above). ``on_batch(n)`` is called
    after each batch with the number of samples it scored (a progress display). The head runs in the
    model's dtype and its logits are cast to float32 for the cross-entropy, as Hugging Face does: in
    bf16 this matches the reference ~2x closer than a float32 head, at no cost on CPU and less on GPU.
    """
    device = torch.device(device)
    losses = [math.inf] * len(samples)
    vocab = _vocab_limit(model)
    lengths = [ids.numel() if isinstance(ids, torch.Tensor) else 0 for ids, _ in samples]
    order = sorted(
        (i for i, (ids, prompt_len) in enumerate(samples) if _scorable(ids, prompt_len, vocab)),
        key=lambda i: -lengths[i],
    )
    on_cpu = device.type == "cpu"
    if token_budget is None:
        token_budget = CPU_TOKEN_BUDGET if on_cpu else ACCELERATOR_TOKEN_BUDGET
    if logits_chunk is None:
        logits_chunk = CPU_LOGITS_CHUNK if on_cpu else ACCELERATOR_LOGITS_CHUNK
    scorer = _Scorer(model, _split_head(model), device, logits_chunk)
    was_training = model.training
    model.eval()
    try:
        # FSDP reuses the buffers it gathers the weights into: made under inference mode, training
        # could not update them afterwards (the miner's FSDP evaluation), so a sharded model gets no_grad
        with torch.no_grad() if _sharded(model) else torch.inference_mode():
            for batch in _buckets(order, lengths, max(token_budget, 1), max(max_batch_size, 1)):
                losses_of_batch = scorer.score_or_split([samples[i] for i in batch])
                for index, loss in zip(batch, losses_of_batch, strict=True):
                    losses[index] = _finite(loss)
                if on_batch is not None:
                    on_batch(len(batch))
    finally:
        model.train(was_training)
    return losses


def compute_losses_reference(
    model: nn.Module, samples: Sequence[Sample], device: torch.device | str
) -> list[float]:
    """The seed's way: one sample at a time, full forward with labels (full-vocabulary logits everywhere)."""
    vocab = _vocab_limit(model)
    losses: list[float] = []
    model.eval()
    with torch.no_grad():
        for ids, prompt_len in samples:
            if not _scorable(ids, prompt_len, vocab):
                losses.append(math.inf)
                continue
            try:
                inputs = ids.reshape(1, -1).to(device)
                labels = inputs.clone()
                labels[:, :prompt_len] = -100
                losses.append(_finite(float(model(inputs, labels=labels).loss)))
            except Exception:  # noqa: BLE001 - as in the seed: a failing sample scores inf
                losses.append(math.inf)
    return losses
