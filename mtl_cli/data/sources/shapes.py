"""Embedded, procedurally generated multi-attribute image data ("shapes"): no download.

Each image (3 x S x S, values in [0, 1]) holds 1 to ``max_objects`` coloured shapes on a noisy
background. The first object is the *main* object: the largest, drawn on top of the others. Targets:

- ``shape``: main object's shape (circle, square, triangle, cross): classification, 4 classes
- ``color``: main object's colour: classification, 6 classes
- ``size``: main object's radius as a fraction of the image side: scalar regression
- ``position``: main object's centre (x, y) in [0, 1]: vector regression
- ``large``: main object's radius above 0.22 (the median): binary
- ``present``: which shapes appear anywhere in the image: multi-label, 4 labels
- ``segmentation``: per-pixel shape class (0 background, 1..4 shapes; later objects on top)
- ``depth``: per-pixel depth: objects nearer than the background, each at its own depth

``style="outline"`` draws each shape as its outline, a ring about 2 px wide, instead of filled
(targets unchanged; ``segmentation`` and ``depth`` then cover the drawn ring). ``grayscale=True``
gives 1 x S x S images, the luminance of the RGB ones. Together they give two kinds of images from
one generator.

Generation is vectorised over the whole split, so thousands of images take well under a second.
The seed fixes everything: same seed, same data, on any machine.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

import torch
import torch.nn.functional as F

from ...config.params import NonNeg, PosInt, Range, Seed, Unit
from ...errors import ConfigError, DataError
from ...registry import SOURCES
from ..base import (
    IMAGE_SUFFIXES,
    DataSource,
    DataSpec,
    InMemoryDataset,
    InputSpec,
    PreparedInputs,
    TargetSpec,
    file_stems,
    image_to_tensor,
    missing_label_masks,
    missing_label_problems,
    read_image_file,
    size_problem,
)

SHAPES = ("circle", "square", "triangle", "cross")
TARGETS = ("shape", "color", "size", "position", "large", "present", "segmentation", "depth")
COLORS = ("red", "green", "blue", "yellow", "magenta", "cyan")
_RGB = torch.tensor(
    [[0.9, 0.1, 0.1], [0.1, 0.8, 0.1], [0.15, 0.2, 0.95], [0.9, 0.85, 0.1], [0.85, 0.1, 0.85], [0.1, 0.85, 0.85]]
)
Style = Literal["filled", "outline"]
STYLES = get_args(Style)
_LUMA = torch.tensor([0.299, 0.587, 0.114])  # ITU-R BT.601 luminance weights


def _shape_mask(kind: torch.Tensor, cx, cy, r, xs, ys) -> torch.Tensor:
    """Boolean masks [N, S, S] of shapes ``kind`` [N] centred at (cx, cy) [N] with radius r [N]."""
    dx = xs[None] - cx[:, None, None]
    dy = ys[None] - cy[:, None, None]
    r = r[:, None, None]
    circle = dx**2 + dy**2 <= r**2
    square = (dx.abs() <= r * 0.85) & (dy.abs() <= r * 0.85)
    # upward triangle: below the two slanted edges and above the base
    triangle = (dy <= r * 0.8) & (dy >= -r + 2 * dx.abs())
    arm = r / 3
    cross = ((dx.abs() <= arm) & (dy.abs() <= r)) | ((dy.abs() <= arm) & (dx.abs() <= r))
    k = kind[:, None, None]
    return torch.where(k == 0, circle, torch.where(k == 1, square, torch.where(k == 2, triangle, cross)))


def _outline(m: torch.Tensor, width: int = 2) -> torch.Tensor:
    """The pixels of masks ``m`` [N, S, S] within ``width`` px (8-neighbourhood) of the outside;
    beyond the image border counts as outside."""
    outside = F.pad((~m).float()[:, None], (width,) * 4, value=1.0)
    near = F.max_pool2d(outside, 2 * width + 1, stride=1)[:, 0] > 0
    return m & near


def generate(
    n: int,
    image_size: int,
    max_objects: int,
    noise: float,
    seed: int,
    style: str = "filled",
    grayscale: bool = False,
) -> dict:
    """Generate ``n`` samples; returns images and all targets as tensors. ``style`` and
    ``grayscale`` change only the drawing: the random draws, so the targets, stay the same."""
    if style not in STYLES:
        raise ValueError(f"style {style!r} not in {STYLES}")
    g = torch.Generator().manual_seed(seed)
    s = image_size
    coords = torch.arange(s, dtype=torch.float32) + 0.5
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    n_obj = torch.randint(1, max_objects + 1, (n,), generator=g)
    images = torch.rand(n, 3, 1, 1, generator=g) * 0.25 + noise * torch.randn(n, 3, s, s, generator=g)
    seg = torch.zeros(n, s, s, dtype=torch.long)
    depth = torch.full((n, 1, s, s), 1.0)
    present = torch.zeros(n, len(SHAPES))
    main = {}
    r_main = (0.16 + 0.12 * torch.rand(n, generator=g)) * s  # radius ~ U(0.16, 0.28) x side
    # draw from the back: objects k >= 1 first, the main object (k = 0) last, on top
    for k in reversed(range(max_objects)):
        kind = torch.randint(0, len(SHAPES), (n,), generator=g)
        color = torch.randint(0, len(COLORS), (n,), generator=g)
        r = r_main if k == 0 else r_main * (0.45 + 0.35 * torch.rand(n, generator=g))
        cx = r + torch.rand(n, generator=g) * (s - 2 * r)
        cy = r + torch.rand(n, generator=g) * (s - 2 * r)
        z = 0.2 + 0.6 * torch.rand(n, generator=g)
        active = n_obj > k
        m = _shape_mask(kind, cx, cy, r, xs, ys) & active[:, None, None]
        if style == "outline":
            m = _outline(m)
        shade = 0.85 + 0.15 * torch.rand(n, 1, 1, 1, generator=g)
        images = torch.where(m[:, None], _RGB[color][:, :, None, None] * shade, images)
        seg = torch.where(m, kind[:, None, None] + 1, seg)
        depth = torch.where(m[:, None], z[:, None, None, None], depth)
        present[torch.arange(n)[active], kind[active]] = 1.0
        if k == 0:
            main = dict(kind=kind, color=color, r=r / s, cx=cx / s, cy=cy / s)
    images = (images + noise * torch.randn(n, 3, s, s, generator=g)).clamp(0.0, 1.0)
    if grayscale:
        images = (images * _LUMA[None, :, None, None]).sum(dim=1, keepdim=True)
    size = main["r"]
    return {
        "image": images,
        "shape": main["kind"],
        "color": main["color"],
        "size": size,
        "position": torch.stack([main["cx"], main["cy"]], dim=1),
        "large": (size > 0.22).float(),  # 0.22 is the median of the main radius distribution
        "present": present,
        "segmentation": seg,
        "depth": depth,
    }


@SOURCES.register("shapes")
class ShapesSource(DataSource):
    """Seeded synthetic shapes; each split drawn with its own seed derived from ``seed``.

    ``missing_labels`` maps a target to the fraction of samples whose label is dropped (masked),
    to exercise and demonstrate missing-label training.
    """

    def __init__(
        self,
        train_size: PosInt = 2000,
        val_size: PosInt = 500,
        test_size: PosInt = 500,
        image_size: Annotated[int, Range(ge=8)] = 32,  # smaller images cannot hold the shapes
        max_objects: Annotated[int, Range(ge=1, le=32)] = 3,  # each is drawn over the whole image
        noise: NonNeg = 0.05,
        seed: Seed = 0,
        missing_labels: dict[str, Unit] | None = None,
        style: Style = "filled",
        grayscale: bool = False,
    ):
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        bad = missing_label_problems(dict(missing_labels or {}), TARGETS, "shapes")
        if bad:
            raise ConfigError(bad)
        self.style = style
        self.grayscale = grayscale
        self.image_size = image_size
        self.max_objects = max_objects
        self.noise = noise
        self.seed = seed
        self.missing_labels = dict(missing_labels or {})

    def describe(self) -> DataSpec:
        s = self.image_size
        return DataSpec(
            inputs={"image": InputSpec("image", (1 if self.grayscale else 3, s, s), "image")},
            targets={
                "shape": TargetSpec("shape", "classification", (), len(SHAPES), list(SHAPES)),
                "color": TargetSpec("color", "classification", (), len(COLORS), list(COLORS)),
                "size": TargetSpec("size", "regression", ()),
                "position": TargetSpec("position", "regression", (2,)),
                "large": TargetSpec("large", "binary", ()),
                "present": TargetSpec("present", "multilabel", (len(SHAPES),), len(SHAPES), list(SHAPES)),
                "segmentation": TargetSpec(
                    "segmentation",
                    "segmentation",
                    (s, s),
                    len(SHAPES) + 1,
                    ["background", *SHAPES],
                    ignore_index=255,
                ),
                "depth": TargetSpec("depth", "dense_regression", (1, s, s)),
            },
        )

    predict_suffixes = IMAGE_SUFFIXES
    predict_accepts = (
        "image files (PNG, JPEG, ...) of data.image_size pixels square, a folder of them, or a CSV listing them"
    )

    def prepare_inputs(self, files, artifacts, resize=None) -> PreparedInputs:
        """Image files as the generator's images: values in [0, 1] (8-bit / 255), RGB, or for
        ``grayscale`` the BT.601 luminance of the RGB values (a grayscale file is taken as it is).
        Generated images are never resized, so an image of another size is refused unless
        ``resize`` is True (then resized, antialiased)."""
        s, images, sizes, problems = self.image_size, [], [], []
        for f in files:
            img = read_image_file(f)
            sizes.append(img.size)
            if img.size != (s, s) and not resize:
                problems.append(
                    size_problem(f, img.size, (s, s), "shapes images are drawn at data.image_size and never resized")
                )
                continue
            gray_file = img.mode in ("L", "LA", "I;16", "1")
            x = image_to_tensor(img, 1 if self.grayscale and gray_file else 3).float().div_(255.0)
            if self.grayscale and not gray_file:
                x = (x * _LUMA[:, None, None]).sum(dim=0, keepdim=True)
            if tuple(x.shape[-2:]) != (s, s):
                x = F.interpolate(x[None], size=(s, s), mode="bilinear", antialias=True, align_corners=False)[0]
            images.append(x)
        if problems:
            raise DataError(problems[:10])
        return PreparedInputs({"image": torch.stack(images)}, [str(f) for f in files], file_stems(files), sizes)

    def estimated_bytes(self) -> int:
        """The splits as stored (image float32, segmentation int64, depth float32 per pixel) plus
        the temporaries of drawing the largest split (about 50 bytes per pixel)."""
        pixels = self.image_size**2
        stored = sum(self.sizes.values()) * (4 * (1 if self.grayscale else 3) + 8 + 4) * pixels
        return stored + max(self.sizes.values()) * 50 * pixels

    def load(self) -> dict[str, InMemoryDataset]:
        out = {}
        for i, split in enumerate(("train", "val", "test")):
            seed = self.seed * 1000 + i  # disjoint streams per split
            d = generate(
                self.sizes[split], self.image_size, self.max_objects, self.noise, seed, self.style, self.grayscale
            )
            image = d.pop("image")
            masks = missing_label_masks(self.sizes[split], self.missing_labels, seed + 7919)
            out[split] = InMemoryDataset({"image": image}, d, masks)
        return out
