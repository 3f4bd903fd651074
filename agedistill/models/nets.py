"""Networks: the compact conv net (student), pretrained-backbone nets and the ranking teacher."""

from __future__ import annotations

import math

import torch
from torch import nn

from agedistill.models.errors import check_stage
from agedistill.models.ordinal import permutations

RANK_HEADS = ("permutation", "plackett_luce")  # RankTeacher's heads (params: rank_teacher.head)


def _conv(cin: int, cout: int, stride: int = 1, depthwise: bool = False) -> nn.Sequential:
    if depthwise and cin > 3:
        layers = [
            nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
            nn.BatchNorm2d(cin),
            nn.ReLU(inplace=True),
            nn.Conv2d(cin, cout, 1, bias=False),
        ]
    else:
        layers = [nn.Conv2d(cin, cout, 3, stride, 1, bias=False)]
    return nn.Sequential(*layers, nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ConvNet(nn.Module):
    """Stages of conv-conv(-pool); global average pooling; linear head.

    Stage ``i`` has ``widths[i]`` channels; every stage but the last ends with 2x2 max pooling.
    ``stem_stride=2`` halves the input in the first convolution, the main lever on compute.

    ``forward`` returns logits (B, num_outputs); :meth:`forward_features` also returns the feature
    map of every stage (for hint losses).
    """

    def __init__(
        self,
        widths: list[int],
        num_outputs: int,
        stem_stride: int = 2,
        depthwise: bool = False,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        stages = []
        cin = 3
        for i, w in enumerate(widths):
            first = _conv(cin, w, stem_stride if i == 0 else 1, depthwise)
            layers = [first, _conv(w, w, 1, depthwise)]
            stages.append(nn.Sequential(*layers))
            cin = w
        self.stages = nn.ModuleList(stages)
        self.pool = nn.MaxPool2d(2)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(cin, num_outputs)
        self.widths = list(widths)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Pooled embedding (B, widths[-1]) and every stage's map before pooling."""
        maps = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            maps.append(x)
            if i < len(self.stages) - 1:
                x = self.pool(x)
        return x.mean(dim=(2, 3)), maps

    def feature_map(self, x: torch.Tensor, stage: int) -> torch.Tensor:
        """Stage ``stage``'s map before pooling, running no later stage."""
        check_stage(stage, len(self.stages))
        for i in range(stage + 1):
            x = self.stages[i](x)
            if i < stage:
                x = self.pool(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        emb, _ = self.forward_features(x)
        return self.head(self.dropout(emb))


class PretrainedNet(nn.Module):
    """A pretrained backbone (:mod:`agedistill.models.backbones`), global pooling, a linear head.

    The same interface as :class:`ConvNet`: ``forward`` returns (B, num_outputs) and
    :meth:`forward_features` the pooled embedding and one map per stride (2, 4, 8, 16, 32), whose
    channels are ``widths``. It is built with random weights; the recipes load the ImageNet
    weights (:func:`~agedistill.models.backbones.load_pretrained`) before training, and a model
    file brings its own.
    """

    def __init__(self, backbone: str, num_outputs: int, dropout: float = 0.1) -> None:
        super().__init__()
        from agedistill.models.backbones import build_backbone  # torchvision: only when used

        self.net = build_backbone(backbone)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.net.out_features, num_outputs)
        self.widths = list(self.net.widths)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Pooled embedding (B, out_features) and the backbone's map at every stride."""
        return self.net.forward_features(x)

    def feature_map(self, x: torch.Tensor, stage: int) -> torch.Tensor:
        """The backbone's map at stride 2^(stage+1), running no later layer."""
        return self.net.feature_map(x, stage)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        emb, _ = self.forward_features(x)
        return self.head(self.dropout(emb))


def backbone_sides(input_size: int, n_stages: int = 5) -> list[int]:
    """Side of each map of a :class:`PretrainedNet` for ``input_size`` faces: one per stride 2^i.

    Every stride-2 convolution of the backbones pads so that its output is ``ceil(side / 2)``.
    """
    sides, side = [], input_size
    for _ in range(n_stages):
        side = -(-side // 2)
        sides.append(side)
    return sides


class RankTeacher(nn.Module):
    """A network embedding each face; a head scores each permutation of K faces.

    Input (B, K, 3, H, W) in shuffled order; output (B, K!) logits over
    :func:`agedistill.models.ordinal.permutations`. Each face is embedded independently (shared
    weights). ``head`` ``"permutation"``: the K embeddings are concatenated in input order and an
    MLP names the permutation (the paper's order-recovery classifier). ``"plackett_luce"``: a
    linear layer gives each face one score and each permutation's logit is its Plackett-Luce
    log-likelihood (:func:`plackett_luce_logits`), so recovering the order means scoring every
    face by its age rank. ``backbone`` ``"convnet"`` embeds with a :class:`ConvNet` of ``widths``
    trained from scratch; any name of :data:`agedistill.models.backbones.BACKBONE_NAMES` with a
    :class:`PretrainedNet`.
    """

    def __init__(
        self,
        widths: list[int],
        k: int,
        feature_dim: int = 128,
        stem_stride: int = 1,
        depthwise: bool = False,
        dropout: float = 0.1,
        *,
        backbone: str = "convnet",
        head: str = "permutation",
    ) -> None:
        super().__init__()
        if head not in RANK_HEADS:
            raise ValueError(f"unknown ranking head {head!r}; expected one of {RANK_HEADS}")
        self.k = k
        self.head_kind = head
        self.backbone: ConvNet | PretrainedNet
        if backbone == "convnet":
            self.backbone = ConvNet(widths, feature_dim, stem_stride, depthwise, dropout)
        else:
            self.backbone = PretrainedNet(backbone, feature_dim, dropout)
        if head == "permutation":
            self.perm_head = nn.Sequential(
                nn.Linear(k * feature_dim, 256),
                nn.ReLU(inplace=True),
                nn.Linear(256, math.factorial(k)),
            )
        else:
            self.score_head = nn.Linear(feature_dim, 1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Per-face features (N, feature_dim) for faces (N, 3, H, W)."""
        return self.backbone(x)

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every backbone stage's feature map for faces (N, 3, H, W)."""
        return self.backbone.forward_features(x)[1]

    def feature_map(self, x: torch.Tensor, stage: int) -> torch.Tensor:
        """``feature_maps(x)[stage]``, running none of the backbone's later layers (the hint)."""
        return self.backbone.feature_map(x, stage)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        b, k = seq.shape[:2]
        feats = torch.relu(self.embed(seq.flatten(0, 1)))  # (B*K, D)
        if self.head_kind == "plackett_luce":
            return plackett_luce_logits(self.score_head(feats).view(b, k))
        return self.perm_head(feats.view(b, k * feats.shape[-1]))  # (B, K*D) -> (B, K!)


def plackett_luce_logits(scores: torch.Tensor) -> torch.Tensor:
    """Log-likelihood of every permutation of K faces under a Plackett-Luce model of their ages.

    ``scores`` (B, K): one score per face, in input order, higher for an older face. Returns
    (B, K!) in the order of :func:`agedistill.models.ordinal.permutations`, where permutation
    ``p`` says the face at position ``j`` has age rank ``p[j]`` (0 the youngest). Its
    log-likelihood picks the faces oldest first, each with probability softmax over the scores of
    those not yet picked. The K! logits are already normalised (their ``exp`` sums to 1), so
    cross-entropy on them is the listwise Plackett-Luce loss, and their argmax is the order of
    the scores.

    >>> plackett_luce_logits(torch.zeros(1, 2)).exp()
    tensor([[0.5000, 0.5000]])
    """
    perms = permutations(scores.shape[1]).to(scores.device)  # (P, K)
    oldest_first = perms.argsort(dim=1, descending=True)  # (P, K): positions by falling rank
    scores = scores.to(torch.promote_types(scores.dtype, torch.float32))  # bf16 under autocast
    s = scores[:, oldest_first]  # (B, P, K)
    rest = torch.logcumsumexp(s.flip(-1), dim=-1).flip(-1)  # logsumexp of s[..., i:]
    return (s - rest).sum(-1)


class HintAdapter(nn.Module):
    """1x1 conv mapping a student feature map to the teacher's channel count."""

    def __init__(self, student_channels: int, teacher_channels: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(student_channels, teacher_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


def stage_sides(input_size: int, stem_stride: int, n_stages: int) -> list[int]:
    """Side of each :class:`ConvNet` stage's feature map for ``input_size`` faces.

    The stem's 3x3 convolution (padding 1) gives ``ceil(input_size / stem_stride)``; each later
    stage reads its predecessor's map through 2x2 max pooling (halved, rounded down).
    """
    side = -(-input_size // stem_stride)
    sides = [side]
    for _ in range(n_stages - 1):
        side //= 2
        sides.append(side)
    return sides


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
