"""Face detection with MTCNN (facenet-pytorch weights): :class:`MtcnnDetector`.

Robustness rules (one image never takes its neighbours down; every image gets a
:class:`~agedistill.faces.detection.Detection`):

* detection runs on a copy downscaled to ``detect_max_side``; boxes and landmarks are mapped back;
* the MTCNN cascade (:func:`mtcnn_cascade`) copes with zero candidates at every stage, images are
  batched only with same-size images, and a batch that still fails is retried one image at a time
  with the error as that image's reason, so one faceless or tiny image cannot crash its
  neighbours (facenet-pytorch issues #176, #224).

Speed: same-size images share one cascade call; R-Net and O-Net run channels-last on batches
padded to a few fixed sizes; the pyramid and every crop are area-resampled from one integer
summed-area table per batch (:mod:`agedistill.faces.resample`).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torchvision.ops import batched_nms

from agedistill.faces.detection import DETECT, Detection, Face
from agedistill.faces.resample import area_crops, mtcnn_scale, square_crops, summed_area_table


class FixedShapes(torch.nn.Module):
    """Run a per-sample network channels-last on batches padded to a multiple of ``step``.

    Channels-last convolutions and max-pools run about twice as fast on CPU (oneDNN), but oneDNN
    compiles a kernel for every new input shape, and R-Net/O-Net see a different number of
    candidate boxes on every call. Padding the batch bounds the shapes to a handful. The networks
    have no batch-coupled layers, so a row's outputs do not depend on the other rows, up to the
    float rounding of the algorithm oneDNN picks for the padded size.

    A step of 16 keeps the padding small; on the project's CPU (oneDNN of torch 2.14) the outputs
    at every multiple of 16 were bit for bit those at multiples of 64, while at multiples of 8
    that are not of 16 oneDNN picked another algorithm and the last float bits moved.
    """

    def __init__(self, net: torch.nn.Module, step: int = 16) -> None:
        super().__init__()
        self.net = net.to(memory_format=torch.channels_last)
        self.step = step

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n = len(x)
        padded = -(-n // self.step) * self.step
        if padded > n:
            pad = x.new_zeros((padded - n, *x.shape[1:]))
            x = torch.cat([x, pad.contiguous(memory_format=torch.channels_last)])
        out = self.net(x.contiguous(memory_format=torch.channels_last))
        return tuple(o[:n] for o in out)


class _PerImage(torch.nn.Module):
    """Run a network channels-last on each image of a batch alone and stack the outputs (see
    ``pnet_per_image`` of :class:`MtcnnDetector`)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs = [self.net(x[i : i + 1].contiguous(memory_format=torch.channels_last))
                for i in range(len(x))]  # fmt: skip
        if len(outs) == 1:
            return outs[0]
        return tuple(torch.cat(parts) for parts in zip(*outs, strict=True))


class MtcnnDetector:
    """MTCNN with probability filtering, crash-proof batching and downscaled detection.

    Defaults: :data:`DETECT` (the ``align`` stage's and ``predict``'s).

    Parameters
    ----------
    min_prob : float
        Faces below this MTCNN probability are dropped (it returns spurious boxes near 0.8).
    min_face_size : int
        Smallest face searched for, in pixels of the image passed to :meth:`detect`. On images
        downscaled for detection the search size shrinks with them, down to MTCNN's 12-pixel
        window: faces smaller than ``12 / scale`` pixels cannot be found.
    detect_max_side : int
        Detection runs on a copy whose longer side is at most this; results are mapped back.
    batch_size : int
        Images of the same size are run through MTCNN together, at most this many at a time.
    pad : float
        Black border added on every side before detection, as a fraction of the longer side.
        MTCNN needs context around a face: on a tight crop whose face touches the edges (UTKFace
        chips) its landmarks are off by a fifth of the face (eyes on the forehead); with a 0.25
        border they land on the eyes. Coordinates are mapped back to the unpadded image. An
        image with no face on its padded copy is searched again without the border (some faces
        that fill the whole frame, babies' mostly, are only found that way).
    device : str
        Torch device.
    pnet_per_image : bool
        Run P-Net one image at a time inside a batch (R-Net and O-Net stay batched). oneDNN may
        pick another convolution algorithm for another batch size, and P-Net's outputs then
        differ in the last float bits (about 1e-6), enough to move a landmark by 1e-4 px and an
        age by 0.01: with this set, each image's detection is bit for bit that of a one-image
        call. P-Net then also runs channels-last (oneDNN's faster layout on CPU, about 1.7-2.8x
        on its pyramid levels; outputs within about 1e-6 of the default layout). ``predict``
        sets it; the ``align`` stage does not, so its crops stay those its models were trained
        on.
    """

    def __init__(
        self,
        min_prob: float = DETECT.min_prob,
        min_face_size: int = DETECT.min_face_size,
        detect_max_side: int = DETECT.detect_max_side,
        batch_size: int = DETECT.batch_size,
        pad: float = DETECT.pad,
        *,
        device: str = "cpu",
        pnet_per_image: bool = False,
    ) -> None:
        from facenet_pytorch import MTCNN  # weights ship inside the wheel: no download

        if pad < 0:
            raise ValueError(f"pad must be >= 0 (got {pad})")
        self.pad = pad
        self.min_prob = min_prob
        self.min_face_size = min_face_size
        self.detect_max_side = detect_max_side
        self.batch_size = batch_size
        self.device = device
        mtcnn = MTCNN(keep_all=True, min_face_size=min_face_size, device=device).eval()
        self.thresholds, self.factor = mtcnn.thresholds, mtcnn.factor
        pnet = _PerImage(mtcnn.pnet) if pnet_per_image else mtcnn.pnet
        self.nets = [pnet, FixedShapes(mtcnn.rnet), FixedShapes(mtcnn.onet)]

    def _prepare(self, im: Image.Image, pad: float) -> tuple[np.ndarray, float, int]:
        """The detection copy: downscaled, then padded; its scale and the border width."""
        scale = min(1.0, self.detect_max_side / max(im.size))
        if scale < 1.0:
            size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
            im = im.resize(size, Image.Resampling.BILINEAR)
        arr = np.asarray(im)
        border = round(pad * max(arr.shape[:2]))
        if border:
            arr = np.pad(arr, ((border, border), (border, border), (0, 0)))
        return arr, scale, border

    def _min_size(self, scale: float) -> float:
        # MTCNN's pyramid starts at its 12 px window: it cannot search below that
        return max(12.0, self.min_face_size * scale)

    @torch.inference_mode()
    def detect(self, images: list[Image.Image]) -> list[Detection]:
        """Detect faces in each RGB image; never raises because of one image's content.

        Same-size images are batched; a batch that fails is retried one image at a time, so a
        faceless or tiny image cannot take its neighbours down (facenet-pytorch #176, #224).

        Parameters
        ----------
        images : list of PIL.Image.Image
            RGB images of any sizes.

        Returns
        -------
        list of Detection
            One per image, coordinates in that image's pixels.
        """
        out = self._detect_all(images, self.pad)
        if self.pad > 0:  # no face on the padded copy: search the image as it is
            again = [i for i, d in enumerate(out) if not d.faces and d.error is None]
            retried = self._detect_all([images[i] for i in again], 0.0)
            for i, det in zip(again, retried, strict=True):
                if det.faces:
                    out[i] = det
        return out

    def _detect_all(self, images: list[Image.Image], pad: float) -> list[Detection]:
        prepared = [self._prepare(im, pad) for im in images]
        out: list[Detection] = [Detection() for _ in images]
        groups: dict[tuple[tuple[int, ...], float, int], list[int]] = {}
        for i, (arr, scale, border) in enumerate(prepared):
            h, w = arr.shape[0] - 2 * border, arr.shape[1] - 2 * border
            if min(h, w) < self._min_size(scale):
                out[i] = Detection(error=f"image too small ({w}x{h})")
            else:
                groups.setdefault((arr.shape, scale, border), []).append(i)
        for (_, scale, border), members in groups.items():
            for start in range(0, len(members), self.batch_size):
                idx = members[start : start + self.batch_size]
                batch = np.stack([prepared[i][0] for i in idx])
                for i, det in zip(idx, self._detect_batch(batch, scale, border), strict=True):
                    out[i] = det
        return out

    def _detect_batch(self, batch: np.ndarray, scale: float, border: int) -> list[Detection]:
        try:
            return self._run(batch, scale, border)
        except Exception as e:  # isolate the image that breaks MTCNN; its reason is the error
            if len(batch) == 1:
                return [Detection(error=f"detector failed: {type(e).__name__}: {e}")]
            return [d for arr in batch for d in self._detect_batch(arr[None], scale, border)]

    def _run(self, batch: np.ndarray, scale: float, border: int) -> list[Detection]:
        imgs = torch.as_tensor(batch, device=self.device).permute(0, 3, 1, 2)  # uint8 is enough
        boxes, points = mtcnn_cascade(
            imgs, self._min_size(scale), self.nets, self.thresholds, self.factor
        )
        return [self._faces(b, p, scale, border) for b, p in zip(boxes, points, strict=True)]

    def _faces(self, boxes: np.ndarray, points: np.ndarray, scale: float, border: int) -> Detection:
        faces = [
            Face((b[:4] - border) / scale, float(b[4]), (lm - border) / scale)
            for b, lm in zip(boxes, points, strict=True)
            if b[4] >= self.min_prob
        ]
        faces.sort(key=lambda f: -f.prob)
        return Detection(faces)


def mtcnn_cascade(
    imgs: torch.Tensor,
    min_size: float,
    nets: list[torch.nn.Module],
    thresholds: list[float],
    factor: float,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """MTCNN's three stages on a batch of same-size images (Zhang et al., 2016).

    The same computation as facenet-pytorch's ``detect_face``, with two changes: every stage
    copes with zero candidates (facenet-pytorch raises on ``torch.cat([])``, its issues #176 and
    #224), and the candidate crops for R-Net and O-Net are area-resampled from a summed-area
    table (the same values as its one ``interpolate`` call per box, which dominated the cost, at a
    cost that does not grow with the box).

    Parameters
    ----------
    imgs : torch.Tensor
        (B, 3, H, W) RGB with integer values 0..255 (uint8 or float).
    min_size : float
        Smallest face searched for, in pixels (>= 12, MTCNN's window).
    nets : list of torch.nn.Module
        P-Net, R-Net, O-Net.
    thresholds : list of float
        Per-stage face-probability thresholds.
    factor : float
        Scale step of the image pyramid.

    Returns
    -------
    boxes : list of numpy.ndarray
        Per image, (N, 5): ``x1, y1, x2, y2, probability``.
    points : list of numpy.ndarray
        Per image, (N, 5, 2) landmarks ``(x, y)``.
    """
    pnet, rnet, onet = nets
    table = summed_area_table(imgs)  # the pyramid and R-Net's and O-Net's crops come from it
    boxes, inds = _propose(table, pnet, min_size, factor, thresholds[0])
    boxes, inds = _refine(table, boxes, inds, rnet, thresholds[1])
    boxes, inds, points = _output(table, boxes, inds, onet, thresholds[2])
    boxes, points, inds = boxes.cpu().numpy(), points.cpu().numpy(), inds.cpu().numpy()
    return [boxes[inds == b] for b in range(len(imgs))], [
        points[inds == b] for b in range(len(imgs))
    ]


def _pyramid(h: int, w: int, min_size: float, factor: float) -> list[float]:
    """Scales at which P-Net's 12-pixel window covers faces from ``min_size`` to the image."""
    scale = 12.0 / min_size
    side = min(h, w) * scale
    scales = []
    while side >= 12:
        scales.append(scale)
        scale, side = scale * factor, side * factor
    return scales


def _propose(
    table: torch.Tensor, pnet: torch.nn.Module, min_size: float, factor: float, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """P-Net over the pyramid: square candidate boxes (N, 5) and their image indices (N,)."""
    from facenet_pytorch.models.utils.detect_face import generateBoundingBox, rerec

    n, h, w = table.shape[0], table.shape[1] - 1, table.shape[2] - 1
    dev = table.device
    whole = torch.tensor([[0, 0, w, h]], device=dev).expand(n, 4)
    boxes = [torch.zeros((0, 9), device=dev)]
    inds = [torch.zeros(0, dtype=torch.long, device=dev)]
    for scale in _pyramid(h, w, min_size, factor):
        size = (int(h * scale + 1), int(w * scale + 1))
        resized = area_crops(table, torch.arange(n, device=dev), whole, size)  # = interpolate
        x = mtcnn_scale(resized)  # channels last, as _PerImage runs it
        reg, probs = pnet(x if isinstance(pnet, _PerImage) else x.contiguous())  # align: NCHW
        b, i = generateBoundingBox(reg, probs[:, 1], scale, threshold)
        keep = batched_nms(b[:, :4], b[:, 4], i, 0.5)
        boxes.append(b[keep])
        inds.append(i[keep])
    b, i = torch.cat(boxes), torch.cat(inds)
    keep = batched_nms(b[:, :4], b[:, 4], i, 0.7)
    b, i = b[keep], i[keep]
    bw, bh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    reg = torch.stack([b[:, 0] + b[:, 5] * bw, b[:, 1] + b[:, 6] * bh,
                       b[:, 2] + b[:, 7] * bw, b[:, 3] + b[:, 8] * bh, b[:, 4]], dim=1)  # fmt: skip
    return rerec(reg), i


def _refine(
    table: torch.Tensor, boxes: torch.Tensor, inds: torch.Tensor, rnet: torch.nn.Module, thr: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """R-Net: keep confident candidates, suppress overlaps, regress and square the boxes."""
    from facenet_pytorch.models.utils.detect_face import bbreg, rerec

    crops, valid = square_crops(table, boxes, inds, 24)
    boxes, inds = boxes[valid], inds[valid]
    if len(boxes) == 0:
        return boxes[:, :5], inds
    reg, probs = rnet(crops)
    ok = probs[:, 1] > thr
    boxes = torch.cat([boxes[ok, :4], probs[ok, 1:2]], dim=1)
    inds, reg = inds[ok], reg[ok]
    keep = batched_nms(boxes[:, :4], boxes[:, 4], inds, 0.7)
    return rerec(bbreg(boxes[keep], reg[keep])), inds[keep]


def _output(
    table: torch.Tensor, boxes: torch.Tensor, inds: torch.Tensor, onet: torch.nn.Module, thr: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """O-Net: final probabilities, regressed boxes (N, 5) and landmarks (N, 5, 2)."""
    from facenet_pytorch.models.utils.detect_face import batched_nms_numpy, bbreg

    crops, valid = square_crops(table, boxes, inds, 48)
    boxes, inds = boxes[valid], inds[valid]
    if len(boxes) == 0:
        return boxes[:, :5], inds, boxes.new_zeros((0, 5, 2))
    reg, marks, probs = onet(crops)
    ok = probs[:, 1] > thr
    boxes = torch.cat([boxes[ok, :4], probs[ok, 1:2]], dim=1)
    inds, reg, marks = inds[ok], reg[ok], marks[ok]
    bw, bh = boxes[:, 2:3] - boxes[:, 0:1] + 1, boxes[:, 3:4] - boxes[:, 1:2] + 1
    points = torch.stack(
        [bw * marks[:, :5] + boxes[:, 0:1] - 1, bh * marks[:, 5:] + boxes[:, 1:2] - 1], dim=2
    )
    boxes = bbreg(boxes, reg)
    keep = batched_nms_numpy(boxes[:, :4], boxes[:, 4], inds, 0.7, "Min")
    return boxes[keep], inds[keep], points[keep]
