"""CNN+RNN: a 2D CNN encodes each slice, a bidirectional GRU/LSTM reads the
slices as a sequence, and attention (or the last states) pools them into a
volume decision.  Also a bag-of-slices baseline that ignores slice order.

Input layout is the 3D models' ``(B, C, S, H, W)`` with ``S`` the slice axis,
so the same preprocessing feeds 3D CNNs and these models.  Variable slice
counts are passed as ``lengths`` (B,); padded slices are masked out of the
RNN (packing) and of the attention.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from napari_medcnn.models.evidence import evidence_loss, evidence_summary
from napari_medcnn.models.registry import build_model, register


@dataclass
class SequenceOutput:
    """Volume logits (B, K), per-slice logits (B, S, K), attention (B, S)."""

    logits: torch.Tensor
    slice_logits: torch.Tensor
    attention: torch.Tensor | None


class SliceEncoder(nn.Module):
    """Runs a 2D zoo model on every slice, in chunks of slices.

    ``pool="embed"``: the model's own ``embed`` (its penultimate features);
    ``pool="avgmax"``: the mean and the maximum of its last feature map
    (``features``), concatenated.  The maximum keeps a small focal finding
    (a lesion a few pixels wide on one slice) that a global average dilutes
    into the rest of the slice.
    ``pool="evidence"``: a 1x1 convolution turns the last feature map into a
    per-pixel finding logit (the *evidence map*, kept in
    :attr:`last_evidence` after each forward pass, (B, S, h, w)); a slice
    becomes three probabilities (:func:`evidence_summary`).  Lesion masks then
    supervise the map (:func:`evidence_loss`), and the RNN reads each
    slice's evidence.  An encoder that keeps full resolution
    (``lesion_fcn``) suits it best.
    """

    def __init__(
        self,
        in_channels: int,
        encoder: str,
        encoder_kwargs: dict[str, Any],
        chunk: int,
        pool: str = "embed",
    ):
        super().__init__()
        if pool not in SLICE_FEATURES:
            raise ValueError(f"pool must be one of {SLICE_FEATURES}, not {pool!r}")
        self.net = build_model(
            encoder, spatial_dims=2, in_channels=in_channels, **encoder_kwargs
        )
        if pool == "embed" and not hasattr(self.net, "embed"):
            raise TypeError(f"encoder {encoder!r} has no embed() method")
        if pool != "embed" and not isinstance(
            getattr(self.net, "features", None), nn.Module
        ):
            raise TypeError(f"encoder {encoder!r} has no features module")
        self.pool = pool
        self.last_evidence: torch.Tensor | None = None
        if pool != "embed":
            probe = torch.zeros(1, in_channels, 32, 32)
            with torch.no_grad():
                was = self.net.training
                self.net.eval()
                channels = sum(int(m.shape[1]) for m in self._maps(probe))
                self.net.train(was)
            self.feature_dim = 2 * channels
            if pool == "evidence":
                self.evidence_head = nn.Conv2d(channels, 1, 1)
                self.feature_dim = 3
        else:
            self.feature_dim = int(self.net.feature_dim)
        self.chunk = chunk

    def _maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The last feature map; with ``multiscale`` also the map before
        the last downsampling stage (twice the resolution)."""
        if self.pool in ("avgmax", "evidence"):
            return [self.net.features(x)]
        stages = []
        for m in self.net.features:
            x = m(x)
            if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
                stages.append(x)
        return stages[-2:] if len(stages) >= 2 else [x]

    def evidence_map(self, slices: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) slices -> (N, 1, h, w) lesion logits (``evidence``
        pool only); the slice stage trains it on single slices."""
        return self.evidence_head(self._maps(slices)[0])

    def _encode(self, part: torch.Tensor) -> torch.Tensor:
        if self.pool == "embed":
            return self.net.embed(part)
        if self.pool == "evidence":
            ev = self.evidence_map(part)
            self._parts.append(ev[:, 0])
            return evidence_summary(ev)
        out = []
        for fmap in self._maps(part):
            out += [fmap.mean(dim=(-2, -1)), fmap.amax(dim=(-2, -1))]
        return torch.cat(out, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, s, h, w = x.shape
        flat = x.permute(0, 2, 1, 3, 4).reshape(b * s, c, h, w)
        self._parts: list[torch.Tensor] = []
        feats = [self._encode(part) for part in flat.split(self.chunk)]
        if self._parts:
            ev = torch.cat(self._parts)
            self.last_evidence = ev.reshape(b, s, *ev.shape[-2:])
        self._parts = []
        return torch.cat(feats).reshape(b, s, self.feature_dim)


#: how a slice becomes a vector (see :class:`SliceEncoder`)
SLICE_FEATURES = ("embed", "avgmax", "multiscale", "evidence")


def _mask(lengths: torch.Tensor | None, b: int, s: int, device) -> torch.Tensor:
    if lengths is None:
        return torch.ones(b, s, dtype=torch.bool, device=device)
    idx = torch.arange(s, device=device)[None, :]
    return idx < lengths.to(device)[:, None]


class _SliceModel(nn.Module):
    """Shared by the models that encode each slice with a 2D zoo model."""

    encoder: SliceEncoder

    def dense_loss(self, masks: torch.Tensor) -> torch.Tensor | None:
        """The lesion-mask loss of the last forward pass (``evidence``
        slice features only, else None); see :func:`evidence_loss`."""
        ev = self.encoder.last_evidence
        if self.encoder.pool != "evidence" or ev is None:
            return None
        return evidence_loss(ev, masks)

    def load_encoder_from(self, model_2d: nn.Module) -> list[str]:
        """Start the slice encoder from a trained 2D zoo model of the same
        architecture.  Returns the parameter names that were copied (the
        2D model's class head is skipped when its size differs)."""
        own = self.encoder.net.state_dict()
        copied = {
            k: v
            for k, v in model_2d.state_dict().items()
            if k in own and own[k].shape == v.shape
        }
        own.update(copied)
        self.encoder.net.load_state_dict(own)
        return sorted(copied)


class CNNRNN(_SliceModel):
    """Slice encoder + bidirectional RNN + attention/last-state pooling.

    Args:
        in_channels: channels per slice.
        num_classes: output classes.
        encoder: 2D zoo model used per slice (needs ``embed``).
        encoder_kwargs: its arguments (besides dims/channels).
        rnn: ``"gru"`` or ``"lstm"``.
        hidden_size: RNN units per direction.
        bidirectional: read the slices both ways.
        pooling: ``"attention"`` or ``"last"``.
        chunk: slices encoded at once (bounds activation memory).
        slice_features: how each slice becomes a vector (``"embed"``,
            ``"avgmax"``, ``"multiscale"`` or ``"evidence"``, see
            :class:`SliceEncoder`).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        encoder: str = "seed_cnn",
        encoder_kwargs: dict[str, Any] | None = None,
        rnn: str = "gru",
        hidden_size: int = 128,
        bidirectional: bool = True,
        pooling: str = "attention",
        chunk: int = 64,
        slice_features: str = "embed",
    ):
        super().__init__()
        if pooling not in ("attention", "last"):
            raise ValueError(f"pooling must be 'attention' or 'last', not {pooling!r}")
        kwargs = dict(encoder_kwargs or {})
        kwargs.setdefault("num_classes", num_classes)
        self.encoder = SliceEncoder(in_channels, encoder, kwargs, chunk, slice_features)
        rnn_cls = {"gru": nn.GRU, "lstm": nn.LSTM}[rnn]
        self.rnn = rnn_cls(
            self.encoder.feature_dim,
            hidden_size,
            batch_first=True,
            bidirectional=bidirectional,
        )
        out_dim = hidden_size * (2 if bidirectional else 1)
        self.pooling = pooling
        self.attention = nn.Sequential(
            nn.Linear(out_dim, 64), nn.Tanh(), nn.Linear(64, 1)
        )
        self.slice_head = nn.Linear(out_dim, num_classes)
        # with an evidence map, the volume's strongest slice evidence also
        # enters the decision directly (multiple-instance style); the RNN
        # adds the context of the neighbouring slices
        self.evidence_gate = (
            nn.Linear(1, num_classes) if slice_features == "evidence" else None
        )
        self.head = nn.Linear(out_dim, num_classes)  # the last Linear: the head
        self.bidirectional = bidirectional
        self.hidden_size = hidden_size

    def forward_with_slices(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> SequenceOutput:
        """Volume logits plus per-slice logits and attention weights."""
        return self.forward_features(self.encoder(x), lengths)

    def forward_features(
        self, feats: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> SequenceOutput:
        """What :meth:`forward_with_slices` does after the encoder, on slice
        features (B, S, F) (e.g. a frozen encoder's, computed once)."""
        b, s = feats.shape[:2]
        mask = _mask(lengths, b, s, feats.device)
        if lengths is not None:
            packed = pack_padded_sequence(
                feats, lengths.cpu(), batch_first=True, enforce_sorted=False
            )
            out, _ = self.rnn(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=s)
        else:
            out, _ = self.rnn(feats)
        slice_logits = self.slice_head(out)
        attn = None
        if self.pooling == "attention":
            scores = self.attention(out).squeeze(-1).masked_fill(~mask, float("-inf"))
            attn = torch.softmax(scores, dim=1)
            pooled = (attn.unsqueeze(-1) * out).sum(1)
        else:
            pooled = self._last_state(out, mask)
        logits = self.head(pooled)
        if self.evidence_gate is not None:
            strongest = feats[..., 0].masked_fill(~mask, 0.0).amax(1, keepdim=True)
            logits = logits + self.evidence_gate(strongest)
        return SequenceOutput(logits, slice_logits, attn)

    def _last_state(self, out: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        last = mask.sum(1).clamp(min=1) - 1
        fwd = out[torch.arange(out.shape[0]), last, : self.hidden_size]
        if not self.bidirectional:
            return fwd
        return torch.cat([fwd, out[:, 0, self.hidden_size :]], dim=1)

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.forward_with_slices(x, lengths).logits


class SlicePool(_SliceModel):
    """Bag-of-slices baseline: per-slice logits, max- or mean-pooled.

    Ignores slice order by construction; used to show what the RNN adds.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        encoder: str = "seed_cnn",
        encoder_kwargs: dict[str, Any] | None = None,
        pooling: str = "max",
        chunk: int = 64,
        slice_features: str = "embed",
    ):
        super().__init__()
        kwargs = dict(encoder_kwargs or {})
        kwargs.setdefault("num_classes", num_classes)
        self.encoder = SliceEncoder(in_channels, encoder, kwargs, chunk, slice_features)
        self.slice_head = nn.Linear(self.encoder.feature_dim, num_classes)
        self.pooling = pooling

    def forward_with_slices(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> SequenceOutput:
        return self.forward_features(self.encoder(x), lengths)

    def forward_features(
        self, feats: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> SequenceOutput:
        """The pooled decision from slice features (B, S, F)."""
        b, s = feats.shape[:2]
        slice_logits = self.slice_head(feats)
        mask = _mask(lengths, b, s, feats.device).unsqueeze(-1)
        if self.pooling == "max":
            pooled = slice_logits.masked_fill(~mask, float("-inf")).amax(1)
        else:
            pooled = (slice_logits * mask).sum(1) / mask.sum(1).clamp(min=1)
        return SequenceOutput(pooled, slice_logits, None)

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.forward_with_slices(x, lengths).logits


def _no_dims(kwargs: dict[str, Any], name: str) -> dict[str, Any]:
    dims = kwargs.pop("spatial_dims", 3)
    if dims != 3:
        raise ValueError(f"{name} reads volumes (spatial_dims=3), not {dims}D input")
    return kwargs


@register("cnn_rnn")
def cnn_rnn(**kwargs) -> nn.Module:
    """CNN encoder per slice + bidirectional GRU/LSTM (see :class:`CNNRNN`)."""
    return CNNRNN(**_no_dims(kwargs, "cnn_rnn"))


@register("slice_pool")
def slice_pool(**kwargs) -> nn.Module:
    """Order-blind bag-of-slices baseline (see :class:`SlicePool`)."""
    return SlicePool(**_no_dims(kwargs, "slice_pool"))
