"""Face detection (MTCNN, facenet-pytorch weights) and 5-landmark similarity alignment.

The ``align`` stage and ``predict`` share these functions, so a photo at prediction time goes
through exactly the geometry the models were trained on.

Robustness rules (a bad file never stops the stage; every input gets a status):

* images are decoded with EXIF orientation applied and converted to RGB from any mode
  (1, L, LA, P, RGBA, CMYK, I;16, I, F, ...); decompression bombs are refused before decoding,
  and large JPEGs are decoded directly at reduced size;
* detection runs on a copy downscaled to ``detect_max_side``; boxes and landmarks are mapped back;
* the MTCNN cascade (:func:`mtcnn_cascade`) copes with zero candidates at every stage, images are
  batched only with same-size images, and a batch that still fails is retried one image at a time
  with the error as that image's reason, so one faceless or tiny image cannot crash its
  neighbours (facenet-pytorch issues #176, #224).

Speed: same-size images share one cascade call; R-Net and O-Net run channels-last on batches
padded to a few fixed sizes; the pyramid and every crop are area-resampled from one integer
summed-area table per batch (exact sums, one rounding per pixel).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.ops import batched_nms

# ArcFace's canonical 5-point template on a 112x112 crop: eyes, nose tip, mouth corners (x, y).
TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)

# Crop framings: the 5 points (x, y) as fractions of the crop side, before any margin.
# "arcface": ArcFace's tight crop; "utkface": where MTCNN puts them on UTKFace's own chips (median
# over the 8,388 training chips of the full split, made left-right symmetric). ArcFace's framing
# sits a fifth of the side lower and a quarter looser than the chips, so on a chip 36% of an
# ArcFace crop falls outside the image (black); the chips' framing keeps crops inside the chips.
TEMPLATES: dict[str, np.ndarray] = {
    "arcface": TEMPLATE_112 / 112.0,
    "utkface": np.array(
        [[0.3025, 0.292], [0.6975, 0.292], [0.5, 0.524], [0.3275, 0.695], [0.6725, 0.695]]
    ),
}

MAX_PIXELS = 80_000_000  # refuse to decode larger images (decompression-bomb guard)


class ImageReadError(Exception):
    """An input that cannot be decoded as an image; the message is the reason."""


@dataclass
class Face:
    """One detected face in the pixel coordinates of the image it was detected in."""

    box: np.ndarray  # (4,) x1, y1, x2, y2
    prob: float
    landmarks: np.ndarray  # (5, 2) x, y: eyes, nose tip, mouth corners

    @property
    def width(self) -> float:
        """Box width in pixels."""
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        """Box height in pixels."""
        return float(self.box[3] - self.box[1])

    def xywh(self) -> tuple[float, float, float, float]:
        """Box as ``(x, y, w, h)``."""
        return float(self.box[0]), float(self.box[1]), self.width, self.height

    def scaled(self, factor: float) -> Face:
        """The same face with every coordinate multiplied by ``factor``."""
        return Face(self.box * factor, self.prob, self.landmarks * factor)


@dataclass
class Detection:
    """All faces kept in one image (sorted by probability, highest first).

    ``error`` is set (and ``faces`` empty) when the image could not be searched at all: it is
    smaller than the detector's 12-pixel window or the detector itself failed on it.
    """

    faces: list[Face] = field(default_factory=list)
    error: str | None = None


def read_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode ``path`` as an 8-bit RGB image with EXIF orientation applied.

    Parameters
    ----------
    path : str or Path
        Any file; its content, not its suffix, decides whether it is an image.
    max_pixels : int
        Larger images are refused before their pixels are decoded (decompression bombs).

    Returns
    -------
    PIL.Image.Image
        RGB image, upright.

    Raises
    ------
    ImageReadError
        With a short reason: ``unreadable: empty file``, ``not an image``, ``unreadable: ...``
        (truncated or corrupt), ``image too large: ...``.
    """
    return load_image(path, max_pixels=max_pixels)[0]


def load_image(
    path: str | Path, max_side: int | None = None, max_pixels: int = MAX_PIXELS
) -> tuple[Image.Image, float]:
    """Decode ``path`` as upright 8-bit RGB, downscaled so its longer side is <= ``max_side``.

    JPEGs are decoded at reduced resolution directly (``Image.draft``), so a 40-megapixel photo
    costs neither the time nor the memory of its full size.

    Parameters
    ----------
    path : str or Path
        The file to decode.
    max_side : int, optional
        Longer side of the returned image; ``None`` keeps the full resolution.
    max_pixels : int
        Decompression-bomb guard: images with more pixels are refused before decoding.

    Returns
    -------
    image : PIL.Image.Image
        The RGB image.
    scale : float
        ``image.width / upright original width`` (1.0 when not downscaled); divide coordinates
        in ``image`` by it to get original-image pixels.

    Raises
    ------
    ImageReadError
        See :func:`read_image`.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageReadError("unreadable: empty file")
        with Image.open(path) as im:
            return _decode(im, max_side, max_pixels)
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError("not an image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageReadError(f"image too large: {e}") from None
    except Exception as e:  # any decoder failure is a reason, never a crash
        raise ImageReadError(f"unreadable: {type(e).__name__}: {e}") from None


def _decode(im: Image.Image, max_side: int | None, max_pixels: int) -> tuple[Image.Image, float]:
    w, h = im.size
    if w * h > max_pixels:
        raise ImageReadError(f"image too large: {w}x{h} exceeds {max_pixels} pixels")
    if max_side is not None and im.format == "JPEG":
        im.draft("RGB", (max_side, max_side))  # DCT-domain downscale, never below max_side
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        im.load()
    rgb = to_rgb(im)
    if max_side is not None and max(rgb.size) > max_side:
        rgb.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    # draft and thumbnail scale both axes alike, and a 90-degree EXIF turn swaps them: the ratio
    # of longer sides is the scale whatever the orientation
    return rgb, max(rgb.size) / max(w, h)


def to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL image to upright 8-bit RGB.

    EXIF orientation is applied (a corrupt EXIF block is ignored), alpha is composited on white,
    16-bit and 32-bit integer images are rescaled from their full range, palettes are expanded.

    Parameters
    ----------
    im : PIL.Image.Image
        Any mode: 1, L, LA, P, PA, RGB, RGBA, CMYK, YCbCr, I;16, I, F, ...

    Returns
    -------
    PIL.Image.Image
        Mode ``RGB``.
    """
    im = _upright(im)
    if im.mode.startswith("I;16"):
        im = _to_l(np.asarray(im, dtype=np.float64) / 257.0)
    elif im.mode in ("I", "F"):
        a = np.asarray(im, dtype=np.float64)
        im = _to_l(a / 257.0 if a.max(initial=0) > 255 else a)
    if im.mode in ("P", "PA"):
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "RGBa", "La"):
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im.convert("RGBA"))
    return im.convert("RGB")


def _upright(im: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # a corrupt EXIF block means "as stored"
        return im


def _to_l(a: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")


class _FixedShapes(torch.nn.Module):
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
    ``pnet_per_image`` of :class:`FaceDetector`)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs = [self.net(x[i : i + 1].contiguous(memory_format=torch.channels_last))
                for i in range(len(x))]  # fmt: skip
        if len(outs) == 1:
            return outs[0]
        return tuple(torch.cat(parts) for parts in zip(*outs, strict=True))


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (0: unchanged), then restore."""
    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# Black border (fraction of the longer side) added before detection: see FaceDetector ``pad``.
DETECT_PAD = 0.25


@dataclass(frozen=True)
class DetectSettings:
    """How faces are searched for: the one set of defaults of the ``align`` stage and ``predict``.

    ``min_face_size`` is 40: the ``align`` stage keeps only faces at least that large, so every
    model was trained on faces of 40 px or more, and searching smaller costs MTCNN's P-Net about
    four times the work per halving of the size (its pyramid starts at ``12 / min_face_size``).
    On the shared real photos (group shots down to 37-px faces) 20 finds no face that 40 misses
    (41 of 43 labelled faces either way; docs/predict.md).

    Fields are those of :class:`FaceDetector` (``pad`` is its ``pad``; ``predict`` takes it from
    the model file, which records the border its training faces were found with).
    """

    min_prob: float = 0.95
    min_face_size: int = 40
    detect_max_side: int = 640
    pad: float = DETECT_PAD
    batch_size: int = 32


DETECT = DetectSettings()

# How the faces of a model were found and cropped when its file does not say (files written
# before ``align.template`` and ``align.detect_pad`` existed).
CROP_DEFAULTS: dict[str, Any] = {"margin": 0.0, "template": "arcface", "detect_pad": DETECT_PAD}


def model_crop(config: dict[str, Any]) -> dict[str, Any]:
    """A model config's ``align_<key>`` settings, with :data:`CROP_DEFAULTS` for missing keys."""
    return {k: config.get(f"align_{k}", v) for k, v in CROP_DEFAULTS.items()}


class FaceDetector:
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
        self.nets = [pnet, _FixedShapes(mtcnn.rnet), _FixedShapes(mtcnn.onet)]

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


def _normalized(x: torch.Tensor) -> torch.Tensor:
    return (x - 127.5) * 0.0078125


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
        resized = _area_crops(table, torch.arange(n, device=dev), whole, size)  # = interpolate
        x = _normalized(resized)  # channels last, as _PerImage runs it
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


def summed_area_table(imgs: torch.Tensor) -> torch.Tensor:
    """Exact integral images (B, H + 1, W + 1, C), channels last, of images (B, C, H, W) whose
    values are integers 0..255 (any dtype).

    Integer sums are exact; int32 holds them for images up to 2**31 / 255 pixels (about 2,900 x
    2,900) and is the fastest (half the memory of float64, no rounding); larger images get int64.
    """
    b, c, h, w = imgs.shape
    dtype = table_dtype(h, w)
    table = torch.zeros((b, h + 1, w + 1, c), dtype=dtype, device=imgs.device)
    pixels = imgs.permute(0, 2, 3, 1).to(dtype)  # a view for NHWC data (decoded images are)
    if imgs.is_cuda:  # one kernel for the whole table
        table[:, 1:, 1:] = pixels.cumsum(2, dtype=dtype).cumsum(1, dtype=dtype)
        return table
    table[:, 1:, 1:] = pixels.cumsum(2, dtype=dtype)
    for y in range(2, h + 1):  # whole-row adds: faster on CPU than a cumsum over dim 1 here
        table[:, y].add_(table[:, y - 1])
    return table


def table_dtype(h: int, w: int) -> torch.dtype:
    """The integer dtype that holds the pixel sums of an ``h`` x ``w`` uint8 image exactly."""
    return torch.int32 if 255 * h * w < 2**31 else torch.int64


def _area_crops(
    table: torch.Tensor, inds: torch.Tensor, boxes: torch.Tensor, size: int | tuple[int, int]
) -> torch.Tensor:
    """``F.interpolate(img[:, y1:y2, x1:x2], size, mode="area")`` for every integer box at once.

    Area resampling averages each output pixel's input window (PyTorch's adaptive-pool windows:
    ``floor(i * n / size)`` to ``ceil((i + 1) * n / size)``); from a summed-area table every
    window sum is four lookups, so the cost does not grow with the box. Boxes (N, 4) are integer
    ``x1, y1, x2, y2`` inside the image with ``x2 > x1`` and ``y2 > y1``; ``inds`` their images.
    Returns (N, C, out_h, out_w) float32 in channels-last memory (the layout MTCNN's networks
    run fastest in): each window's exact integer sum divided by its area, rounded once (in
    float32 while the sums fit its 24-bit mantissa, otherwise in float64).
    """
    x1, y1, x2, y2 = boxes.long().unbind(1)
    out_h, out_w = (size, size) if isinstance(size, int) else size
    _, rows, cols, c = table.shape

    def edges(lo, hi, m):
        i, n = torch.arange(m, device=table.device), (hi - lo)[:, None]
        return lo[:, None] + (i * n) // m, lo[:, None] - ((-(i + 1) * n) // m)  # floor, ceil

    ys, ye = edges(y1, y2, out_h)  # (N, out_h)
    xs, xe = edges(x1, x2, out_w)
    base = inds[:, None, None] * (rows * cols)
    ys, ye = base + ys[:, :, None] * cols, base + ye[:, :, None] * cols  # (N, out_h, 1)
    xs, xe = xs[:, None, :], xe[:, None, :]  # (N, 1, out_w)
    flat = table.view(-1, c)  # one row of C sums per table cell: a gather per corner
    sums = flat[ye + xe] - flat[ys + xe] - flat[ye + xs] + flat[ys + xs]  # (N, out_h, out_w, C)
    area = ((ye - ys) // cols) * (xe - xs)
    largest = int(area.max()) if area.numel() else 0  # no boxes: an empty batch of crops
    exact = torch.float32 if largest * 255 < 2**24 else torch.float64
    out = sums.to(exact) / area[..., None].to(exact)  # both exact: one rounding, as interpolate
    return out.float().permute(0, 3, 1, 2)


def _crops(
    table: torch.Tensor, boxes: torch.Tensor, inds: torch.Tensor, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised ``size`` x ``size`` crops of the boxes clipped to the image, and which boxes
    were not empty after clipping (as MTCNN: a box is cut at the border, then area-resized)."""

    h, w = table.shape[1] - 1, table.shape[2] - 1
    t = boxes[:, :4].trunc()
    x1, y1 = t[:, 0].clamp(min=1) - 1, t[:, 1].clamp(min=1) - 1
    x2, y2 = t[:, 2].clamp(max=w), t[:, 3].clamp(max=h)
    valid = (x2 > x1) & (y2 > y1)
    clipped = torch.stack([x1, y1, x2, y2], dim=1)[valid]
    return _normalized(_area_crops(table, inds[valid], clipped, size)), valid


def _refine(
    table: torch.Tensor, boxes: torch.Tensor, inds: torch.Tensor, rnet: torch.nn.Module, thr: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """R-Net: keep confident candidates, suppress overlaps, regress and square the boxes."""
    from facenet_pytorch.models.utils.detect_face import bbreg, rerec

    crops, valid = _crops(table, boxes, inds, 24)
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

    crops, valid = _crops(table, boxes, inds, 48)
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


def select_face(faces: list[Face], image_size: tuple[int, int], how: str = "largest") -> Face:
    """Pick the main face: the largest box, or the one closest to the image centre."""
    if not faces:
        raise ValueError("no faces to select from")
    if how == "largest":
        return max(faces, key=lambda f: f.width * f.height)
    if how == "central":
        cx, cy = image_size[0] / 2, image_size[1] / 2

        def dist(f: Face) -> float:
            return float(np.hypot((f.box[0] + f.box[2]) / 2 - cx, (f.box[1] + f.box[3]) / 2 - cy))

        return min(faces, key=dist)
    raise ValueError(f"unknown face selection {how!r}; use 'largest' or 'central'")


def template(size: int, margin: float, name: str = "arcface") -> np.ndarray:
    """The 5-point template for a ``size`` x ``size`` crop with ``margin`` context on each side.

    ``margin=0`` is the framing ``name`` as it is (see :data:`TEMPLATES`); ``margin=0.2`` shrinks
    the face so that 20% of the crop width is added on every side; a negative margin zooms in.

    Parameters
    ----------
    size : int
        Crop side in pixels.
    margin : float
        Context added on each side, as a fraction of the tight crop's side.
    name : str
        The framing: a key of :data:`TEMPLATES`.

    Returns
    -------
    numpy.ndarray
        (5, 2) pixel coordinates ``(x, y)`` of the eyes, nose tip and mouth corners.

    >>> template(112, 0.0)[0].round(2).tolist()
    [38.29, 51.7]
    """
    if name not in TEMPLATES:
        raise ValueError(f"unknown crop template {name!r}; known: {sorted(TEMPLATES)}")
    unit = TEMPLATES[name] - 0.5
    return (unit / (1.0 + 2.0 * margin) + 0.5) * size


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping ``src`` to ``dst``.

    Umeyama (1991), eq. 40-42: minimises ``sum_i |dst_i - (s R src_i + t)|^2``.

    Parameters
    ----------
    src, dst : numpy.ndarray
        (N, 2) corresponding points, N >= 2.

    Returns
    -------
    numpy.ndarray
        (2, 3) matrix ``M`` with ``dst ~ M @ [x, y, 1]``.

    >>> src = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    >>> bool(np.allclose(similarity_transform(src, 2 * src + 3), [[2, 0, 3], [0, 2, 3]]))
    True
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rot = u @ sign @ vt
    scale = np.trace(np.diag(sig) @ sign) / s.var(0).sum()
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - m[:, :2] @ mu_s
    return m


def align_face(
    im: Image.Image, landmarks: np.ndarray, size: int, margin: float, name: str = "arcface"
) -> Image.Image:
    """Warp ``im`` so that ``landmarks`` land on :func:`template` in a square crop.

    Parameters
    ----------
    im : PIL.Image.Image
        RGB image.
    landmarks : numpy.ndarray
        (5, 2) pixel coordinates in ``im`` (MTCNN's order: eyes, nose, mouth corners).
    size, margin, name
        See :func:`template`.

    Returns
    -------
    PIL.Image.Image
        ``size`` x ``size`` RGB crop; area outside ``im`` is black.
    """
    m = similarity_transform(landmarks, template(size, margin, name))
    inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
    # PIL samples output pixel (x, y) at inv @ (x + 0.5, y + 0.5) and reads that point as a
    # pixel-edge coordinate; shift so pixel indices map to pixel indices, as for the landmarks
    inv[:, 2] += 0.5 - inv[:, :2] @ [0.5, 0.5]
    return im.transform(
        (size, size),
        Image.Transform.AFFINE,
        inv.ravel().tolist(),
        resample=Image.Resampling.BILINEAR,
        fillcolor="black",
    )
