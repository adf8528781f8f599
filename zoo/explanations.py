"""Explanations: how much each input patch matters to a model's output, on its own token grid.

    relevance = zoo.explain(vit, images)              # (B, H/p, W/p)
    relevance = zoo.explain(ast, waveforms)           # (B, frequency patches, time patches)
    relevance = zoo.explain(patchtst, history)        # (B, C, num_patches)
    relevance = zoo.explain(vit, images, target=3)    # for class 3 instead of the predicted one

Three methods read the encoder's attention maps (recorded only while explaining, through
:func:`zoo.layers.record_attention`; normal inference keeps the fused SDPA kernels):

- ``raw``: the last block's attention, mean over heads;
- ``rollout`` (Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020): the
  product over blocks of ``(A + I) / 2`` (head mean, with the residual connection's identity);
- ``grad_rollout`` (the default; Chefer, Gur & Wolf, "Generic Attention-model Explainability
  for Interpreting Bi-Modal and Encoder-Decoder Transformers", ICCV 2021): ``R = I``, then per
  block ``R += mean_heads((dA * A)^+) R`` where ``dA`` is the gradient of the explained output
  with respect to that block's attention. Unlike the first two it depends on the output
  explained: ``target`` picks a class (default: the predicted one) or, for a forecaster, a
  horizon step and channel (default: the whole forecast).

Each method gives one row of the (N, N) token-to-token map: the row of the tokens the head
reads (:meth:`zoo.heads.ClassifierHead.readout_weights`: the class token, the mean over patch
tokens, or the attention pool's weights; a forecaster's flatten head reads every patch, weighed
equally). Prefix tokens (class, registers) are dropped from the result.

A forecast has no direction of evidence the way a class logit has: attention that pulls the
forecast down matters as much as attention that pushes it up. Gradient rollout therefore
keeps ``|dA * A|`` for forecasters and the positive part ``(dA * A)^+`` for classifiers.

:func:`spread_to_input` maps relevance onto the input (pixels, filterbank bins x frames,
time steps) and :func:`delete_patches` replaces chosen patches by the input's mean, the
deletion test of ``benchmarks/explain_deletion.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from zoo.frontends.audio import AudioFrontEnd
from zoo.frontends.base import PatchAxis
from zoo.layers.attention import record_attention
from zoo.models.base import Classifier, Forecaster, TokenModel

METHODS = ("raw", "rollout", "grad_rollout")

Target = int | str | Sequence[int] | torch.Tensor | tuple | None


# --- relevance from attention maps ------------------------------------------------------------

def raw_attention(maps: Sequence[torch.Tensor], readout: torch.Tensor) -> torch.Tensor:
    """The last map (B, H, N, N), mean over heads, read from ``readout`` (B, N): (B, N)."""
    return (readout[:, None] @ maps[-1].mean(dim=1))[:, 0]


def attention_rollout(maps: Sequence[torch.Tensor], readout: torch.Tensor) -> torch.Tensor:
    """Abnar & Zuidema's rollout of maps (B, H, N, N), first block first: (B, N).

    Each block mixes ``(A + I) / 2`` (its attention, mean over heads, plus the residual
    connection); the product over blocks, read from the ``readout`` (B, N) rows.
    """
    eye = torch.eye(maps[0].shape[-1], dtype=maps[0].dtype, device=maps[0].device)
    rollout = eye.expand_as(maps[0][:, 0])
    for attention in maps:
        rollout = (0.5 * attention.mean(dim=1) + 0.5 * eye) @ rollout
    return (readout[:, None] @ rollout)[:, 0]


def gradient_rollout(maps: Sequence[torch.Tensor], grads: Sequence[torch.Tensor],
                     readout: torch.Tensor, *, signed: str = "positive") -> torch.Tensor:
    """Chefer et al.'s rule over maps and their gradients (B, H, N, N): (B, N).

    ``R = I``; per block ``R = R + mean_heads(w(dA * A)) R`` with ``w`` the positive part
    (``signed="positive"``) or the absolute value (``"absolute"``). Returns the ``readout`` rows
    of ``R - I``: what flows through attention, so an output no attention map influences gets
    zero relevance everywhere.
    """
    if signed not in ("positive", "absolute"):
        raise ValueError(f"signed must be 'positive' or 'absolute', got {signed!r}")
    eye = torch.eye(maps[0].shape[-1], dtype=maps[0].dtype, device=maps[0].device)
    relevance = eye.expand_as(maps[0][:, 0])
    for attention, grad in zip(maps, grads, strict=True):
        weighted = grad * attention
        weighted = weighted.clamp(min=0) if signed == "positive" else weighted.abs()
        relevance = relevance + weighted.mean(dim=1) @ relevance
    return (readout[:, None] @ (relevance - eye))[:, 0]


# --- the model-level call ---------------------------------------------------------------------

def _class_targets(model: Classifier, logits: torch.Tensor, target: Target) -> torch.Tensor:
    """The class explained for each sample: (B,) indices."""
    if model.num_classes == 0:   # the head returns pooled features, not logits
        raise ValueError("this model has no classifier (num_classes=0): nothing to take "
                         "gradients of; use method='rollout' or 'raw'")
    if target is None:
        return logits.argmax(dim=-1)
    batch, classes = logits.shape
    if isinstance(target, str):
        from zoo.data.images import resolve_labels

        cfg = model.pretrained_cfg
        labels = resolve_labels(cfg.labels if cfg is not None else None, classes)
        if target not in labels:
            raise ValueError(f"target {target!r} is not one of the model's labels "
                             f"({', '.join(labels[:10])}{', ...' if len(labels) > 10 else ''})")
        target = labels.index(target)
    index = torch.as_tensor(target)
    if index.dtype in (torch.bool,) or index.is_floating_point() or index.is_complex():
        raise ValueError(f"target must be a class index, a label or one index per sample, "
                         f"got {target!r}")
    index = index.to(logits.device).long()
    if index.ndim == 0:
        index = index.expand(batch)
    if index.shape != (batch,):
        raise ValueError(f"target gives {tuple(index.shape)} class indices for a batch of {batch}")
    bad = index[(index < 0) | (index >= classes)]
    if bad.numel():
        raise ValueError(f"target class {int(bad[0])} is out of range: the model has "
                         f"{classes} classes (0-{classes - 1})")
    return index


def _forecast_score(forecast: torch.Tensor, target: Target) -> torch.Tensor:
    """The forecast explained, summed: every step and channel, or ``target`` = step or
    (step, channel), each an index or None for all."""
    horizon, channels = forecast.shape[1:]
    if isinstance(target, tuple) and len(target) != 2:
        raise ValueError(f"a forecaster's target is a step or (step, channel), got {target!r}")
    step, channel = target if isinstance(target, tuple) else (target, None)
    for name, value, size in (("step", step, horizon), ("channel", channel, channels)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"target {name} must be an int, got {value!r}")
        if not 0 <= value < size:
            raise ValueError(f"target {name} {value} is out of range: the forecast has "
                             f"{size} {name}s (0-{size - 1})")
    steps = slice(None) if step is None else slice(step, step + 1)
    picked = slice(None) if channel is None else slice(channel, channel + 1)
    return forecast[:, steps, picked].sum()


def model_input(model: TokenModel, inputs: torch.Tensor,
                sample_rate: int | None = None) -> torch.Tensor:
    """What the encoder's front end patches: ``inputs`` themselves, except for an audio model
    given waveforms (B, S), whose normalised filterbanks (B, T, F) are computed here."""
    if isinstance(model.front_end, AudioFrontEnd):
        with torch.no_grad():
            return model.front_end.features(inputs, sample_rate)
    if sample_rate is not None:
        raise ValueError("sample_rate applies to audio models only")
    return inputs


def explain(model: TokenModel, inputs: torch.Tensor, *, method: str = "grad_rollout",
            target: Target = None, sample_rate: int | None = None) -> torch.Tensor:
    """Relevance of each input patch to the model's output, on the model's token grid.

    ``inputs``: what the model takes (images (B, C, H, W); waveforms (B, S) at
    ``sample_rate`` Hz or filterbanks (B, T, F); histories (B, L, C)). Returns images
    (B, H/p, W/p), audio (B, frequency patches, time patches), forecasters (B, C, patches),
    float32, larger = more relevant (not normalised). ``target`` (``grad_rollout`` only): a
    class index or label, or one index per sample (default: the predicted class); for a
    forecaster a horizon step or (step, channel) (default: the whole forecast). The model is
    evaluated in eval mode and left in the mode it was in; its parameters get no gradients.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if target is not None and method != "grad_rollout":
        raise ValueError(f"method {method!r} does not depend on the output explained; target "
                         "applies to method='grad_rollout'")
    if not isinstance(model, (Classifier, Forecaster)):
        raise TypeError(f"explain takes a zoo classifier or forecaster, got {type(model).__name__}")
    x = model_input(model, inputs, sample_rate)
    axes = model.front_end.patch_axes(tuple(x.shape))
    was_training = model.training
    model.eval()
    try:
        # a caller's inference_mode is left for the computation (its input is cloned out of it)
        with torch.inference_mode(False), torch.set_grad_enabled(method == "grad_rollout"):
            relevance = _token_relevance(model, x.clone(), method, target)
    finally:
        model.train(was_training)
    relevance = relevance[:, model.front_end.num_prefix_tokens:].detach().float()
    return relevance.reshape(x.shape[0], *(axis.count for axis in axes))


def _token_relevance(model: TokenModel, x: torch.Tensor, method: str, target: Target
                     ) -> torch.Tensor:
    """Relevance of every token (B', N), prefix tokens included (B' = B * C for series)."""
    if method == "grad_rollout":
        x.requires_grad_(True)
    with record_attention(model.encoder) as maps:
        if isinstance(model, Classifier):
            tokens = model.forward_features(x)
            output, readout = model.forward_head(tokens), model.head.readout_weights(tokens)
        else:
            output, readout = model(x), None
    if not maps:
        raise ValueError(f"{type(model).__name__} recorded no attention maps")
    if readout is None:   # a flatten head reads every patch token
        batch, tokens_n = maps[-1].shape[0], maps[-1].shape[-1]
        readout = maps[-1].new_full((batch, tokens_n), 1.0 / tokens_n)
    readout = readout.detach()
    if method == "raw":
        return raw_attention(maps, readout)
    if method == "rollout":
        return attention_rollout(maps, readout)
    if isinstance(model, Classifier):
        score = output.gather(1, _class_targets(model, output, target)[:, None]).sum()
    else:
        score = _forecast_score(output, target)
    found = torch.autograd.grad(score, maps, allow_unused=True)
    grads = [torch.zeros_like(m) if g is None else g for m, g in zip(maps, found, strict=True)]
    return gradient_rollout([m.detach() for m in maps], grads, readout,
                            signed="positive" if isinstance(model, Classifier) else "absolute")


# --- from the token grid to the input ---------------------------------------------------------

def _coverage(axis: PatchAxis, device: torch.device) -> torch.Tensor:
    """(length, count) float: 1 where patch i covers input position p."""
    positions = torch.arange(axis.length, device=device)[:, None]
    starts = axis.offset + axis.stride * torch.arange(axis.count, device=device)[None, :]
    return ((positions >= starts) & (positions < starts + axis.size)).float()


def _over_axes(grid_values: torch.Tensor, axes: Sequence[PatchAxis]) -> torch.Tensor:
    """Sum (B, *counts) over each input position's patches: (B, *lengths), in grid order."""
    out = grid_values.float()
    for i, axis in enumerate(axes):
        cover = _coverage(axis, out.device)
        out = (out.movedim(i + 1, -1) @ cover.T).movedim(-1, i + 1)
    return out


def spread_to_input(relevance: torch.Tensor, axes: Sequence[PatchAxis]) -> torch.Tensor:
    """Relevance on the token grid (B, *counts) -> per input position (B, *lengths), axes in
    grid order (images (B, H, W); filterbanks (B, F, T), frequency first as drawn; series
    (B, C, L)): each position gets the mean relevance of the patches covering it (0 where no
    patch does)."""
    covered = _over_axes(torch.ones_like(relevance), axes)
    return _over_axes(relevance, axes) / covered.clamp(min=1)


def _to_input_layout(mask: torch.Tensor, axes: Sequence[PatchAxis], ndim: int) -> torch.Tensor:
    """(B, *lengths) in grid order -> the input's dimension order, size 1 where no axis is."""
    order = sorted(range(len(axes)), key=lambda i: axes[i].dim)
    mask = mask.permute(0, *(1 + i for i in order))
    for dim in range(1, ndim):
        if dim not in {axis.dim for axis in axes}:
            mask = mask.unsqueeze(dim)
    return mask


def delete_patches(model: TokenModel, x: torch.Tensor, deleted: torch.Tensor) -> torch.Tensor:
    """``x`` (the model's input, see :func:`model_input`) with the input of every patch marked
    in ``deleted`` (B, *grid) bool replaced by the input's own mean (per sample, and per channel
    for images and series): the perturbation of the deletion test."""
    axes = model.front_end.patch_axes(tuple(x.shape))
    grid = tuple(axis.count for axis in axes)
    if deleted.shape != (x.shape[0], *grid):
        raise ValueError(f"deleted must be (B, *grid) = {(x.shape[0], *grid)}, got "
                         f"{tuple(deleted.shape)}")
    mask = _to_input_layout(_over_axes(deleted, axes) > 0, axes, x.ndim)
    patched = [axis.dim for axis in axes if axis.size > 1]   # a series' channels are not
    mean = x.mean(dim=patched, keepdim=True)
    return torch.where(mask, mean, x)
