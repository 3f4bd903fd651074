"""BatchNorm folded into the convolution before it: an exact, faster eval-mode network.

Unlike ``torch.fx`` fusion (:func:`agedistill.serving.inference.for_inference`), folding keeps
the module tree, so every method (``forward_features``, ``feature_maps``) still works: what a
frozen teacher needs.
"""

from __future__ import annotations

import copy
from itertools import pairwise

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def _fold_sequential(seq: nn.Sequential) -> None:
    names = list(seq._modules)
    for a, b in pairwise(names):
        conv, bn = seq._modules[a], seq._modules[b]
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            seq._modules[a] = fuse_conv_bn_eval(conv, bn)
            seq._modules[b] = nn.Identity()


def _fold_pairs(module: nn.Module) -> None:
    for conv_name, bn_name in getattr(module, "conv_bn_pairs", ()):
        conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
            setattr(module, bn_name, nn.Identity())


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every BatchNorm that follows a convolution folded in.

    Folds a ``Conv2d`` directly followed by a ``BatchNorm2d`` in any ``nn.Sequential``, and the
    pairs a module names in its ``conv_bn_pairs`` attribute; other BatchNorms stay. ``model``
    itself is left as it is.
    """
    net = copy.deepcopy(model).eval()
    for module in net.modules():
        if isinstance(module, nn.Sequential):
            _fold_sequential(module)
        _fold_pairs(module)
    return net
