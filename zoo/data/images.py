"""Image reading, datasets and transforms: scikit-learn's 8x8 digits (bundled, no download) and
any ``ImageFolder`` directory of the user's own images."""

from __future__ import annotations

import copy
import logging
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset, Subset
from torchvision.transforms import InterpolationMode, v2

from zoo.data import ON_ERROR

if TYPE_CHECKING:
    from torchvision.datasets import ImageFolder

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


DIGITS_LABELS = tuple(str(i) for i in range(10))
DIGITS_SPLIT_SEED = 0
DIGITS_TEST_FRACTION = 0.2   # 360 test images
DIGITS_VAL_FRACTION = 0.1    # 180 validation images, 1,257 for training


class ImageDecodeError(ValueError):
    """An image file that cannot be read whole; the message names the file."""


def _to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB from any PIL mode, keeping the image's range: 16-bit and 32-bit integer
    images are scaled (65535 -> 255; PIL's own ``convert`` clips every value over 255 to
    white), float images are read as [0, 1] (or [0, 255] when larger values occur), palette
    images go through RGBA, CMYK and the rest through PIL's conversions."""
    if image.mode.startswith("I"):
        pixels = np.asarray(image, dtype=np.float64)
        sixteen_bit = image.mode.startswith("I;16") or pixels.max(initial=0) > 255
        pixels = np.clip(pixels / 257.0 if sixteen_bit else pixels, 0, 255)
        image = Image.fromarray(np.round(pixels).astype(np.uint8))
    elif image.mode == "F":
        pixels = np.asarray(image, dtype=np.float64)
        pixels = pixels * 255.0 if pixels.max(initial=0) <= 1.0 else pixels
        image = Image.fromarray(np.round(np.clip(pixels, 0, 255)).astype(np.uint8))
    elif image.mode in ("P", "PA"):
        image = image.convert("RGBA")
    return image if image.mode == "RGB" else image.convert("RGB")


def load_image(path: str | Path) -> Image.Image:
    """Read an image file whole into 8-bit RGB, upright (EXIF orientation applied).

    16-bit, palette, grayscale-with-alpha and CMYK files are converted as :func:`_to_rgb`
    says. A truncated or unreadable file, or one over PIL's decompression-bomb limit
    (``PIL.Image.MAX_IMAGE_PIXELS``, about 89 M pixels), raises :class:`ImageDecodeError`
    naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no image file at {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()                       # decode everything: truncation fails here
                return _to_rgb(ImageOps.exif_transpose(image))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageDecodeError(
            f"image {path} is over the safety limit of {Image.MAX_IMAGE_PIXELS:,} pixels "
            f"(a possible decompression bomb): {err}. If you trust it, raise "
            "PIL.Image.MAX_IMAGE_PIXELS") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageDecodeError(f"cannot read image {path}: {err}") from err


def _interpolation(name: str) -> InterpolationMode:
    try:
        return InterpolationMode(name)
    except ValueError:
        raise ValueError(f"unknown interpolation {name!r}; use bilinear, bicubic or nearest") from None


CROP_MODES = ("center", "squash")


def eval_transform(img_size: int, *, mean: Sequence[float], std: Sequence[float],
                   interpolation: str = "bicubic", crop_pct: float = 1.0,
                   crop_mode: str = "center") -> Callable:
    """PIL image -> normalised (3, S, S) tensor, as timm evaluates: ``center`` resizes the
    short side to floor(S / crop_pct) and centre-crops S x S; ``squash`` resizes both sides to
    floor(S / crop_pct), aspect ratio not kept (SigLIP 2), then centre-crops."""
    if crop_mode not in CROP_MODES:
        raise ValueError(f"crop_mode must be one of {CROP_MODES}, got {crop_mode!r}")
    resize = math.floor(img_size / crop_pct)
    return v2.Compose([
        v2.ToImage(), v2.RGB(),
        v2.Resize(resize if crop_mode == "center" else (resize, resize),
                  interpolation=_interpolation(interpolation), antialias=True),
        v2.CenterCrop(img_size), v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(mean), std=list(std)),
    ])


def train_transform(img_size: int, *, mean: Sequence[float], std: Sequence[float],
                    interpolation: str = "bicubic", scale: tuple[float, float] = (0.35, 1.0),
                    hflip: bool = True) -> Callable:
    """Random-resized crop (and horizontal flip) for fine-tuning on natural images."""
    steps = [v2.ToImage(), v2.RGB(),
             v2.RandomResizedCrop(img_size, scale=scale, interpolation=_interpolation(interpolation),
                                  antialias=True)]
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(mean), std=list(std))]
    return v2.Compose(steps)


def preprocess_settings(cfg_preprocess: Mapping[str, Any]) -> dict[str, Any]:
    """mean / std / interpolation / crop_pct / crop_mode from a pretrained cfg's ``preprocess``."""
    return dict(mean=tuple(cfg_preprocess.get("mean", (0.5, 0.5, 0.5))),
                std=tuple(cfg_preprocess.get("std", (0.5, 0.5, 0.5))),
                interpolation=cfg_preprocess.get("interpolation", "bicubic"),
                crop_pct=float(cfg_preprocess.get("crop_pct", 1.0)),
                crop_mode=cfg_preprocess.get("crop_mode", "center"))


# --- scikit-learn digits ----------------------------------------------------------------------

def digits_split_indices() -> dict[str, list[int]]:
    """The fixed stratified split of the 1,797 digits: train 1,257 / val 180 / test 360."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    targets = load_digits().target
    all_idx = list(range(len(targets)))
    rest, test = train_test_split(all_idx, test_size=DIGITS_TEST_FRACTION, stratify=targets,
                                  random_state=DIGITS_SPLIT_SEED)
    val_size = DIGITS_VAL_FRACTION / (1 - DIGITS_TEST_FRACTION)
    train, val = train_test_split(rest, test_size=val_size, stratify=targets[rest],
                                  random_state=DIGITS_SPLIT_SEED)
    return {"train": sorted(train), "val": sorted(val), "test": sorted(test)}


def random_affine(images: torch.Tensor, *, degrees: float = 10.0, translate: float = 0.1,
                  scale: tuple[float, float] = (0.9, 1.1), fill: float = 0.0) -> torch.Tensor:
    """Batched random rotation / shift / zoom of (B, C, H, W) images, one draw per image.

    ``translate`` is a fraction of the image side; pixels from outside are ``fill``. One
    ``grid_sample`` call for the batch: ~100x cheaper than per-sample transforms on CPU.
    """
    b = images.shape[0]
    angle = (torch.rand(b) * 2 - 1) * degrees * torch.pi / 180
    zoom = torch.empty(b).uniform_(*scale)
    shift = (torch.rand(b, 2) * 2 - 1) * translate * 2   # grid coordinates span [-1, 1]
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1).to(images)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    warped = F.grid_sample(images - fill, grid, mode="bilinear", padding_mode="zeros",
                           align_corners=False)
    return warped + fill


class DigitsDataset(Dataset):
    """scikit-learn's bundled 8x8 handwritten digits as normalised RGB images (3, S, S).

    Pixels 0..16 are scaled to [0, 1], upsampled (bilinear) to ``img_size``, repeated over
    three channels and normalised with ``mean`` / ``std``. Training augmentation is batched
    (:func:`random_affine`, applied by the data module), so items here are deterministic;
    ``background`` is the normalised value of an empty pixel, the fill for augmentation.
    """

    def __init__(self, split: str, *, img_size: int = 32, mean: Sequence[float] = (0.5,) * 3,
                 std: Sequence[float] = (0.5,) * 3) -> None:
        from sklearn.datasets import load_digits

        indices = digits_split_indices()
        if split not in indices:
            raise ValueError(f"split must be one of {sorted(indices)}, got {split!r}")
        digits = load_digits()
        idx = torch.tensor(indices[split])
        pixels = torch.as_tensor(digits.images, dtype=torch.float32)[idx].unsqueeze(1) / 16.0
        pixels = F.interpolate(pixels, size=(img_size, img_size), mode="bilinear",
                               align_corners=False).repeat(1, 3, 1, 1)
        mean_t = torch.tensor(mean).view(1, 3, 1, 1)
        std_t = torch.tensor(std).view(1, 3, 1, 1)
        self.images = (pixels - mean_t) / std_t                      # (N, 3, S, S)
        self.targets = torch.as_tensor(digits.target, dtype=torch.long)[idx]
        self.classes = list(DIGITS_LABELS)
        self.background = float(((0 - mean_t) / std_t).mean())

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.targets[i])


# --- ImageFolder ------------------------------------------------------------------------------

def _check_image_folder(root: Path) -> None:
    if not root.is_dir():
        raise FileNotFoundError(
            f"image folder {root} does not exist; expected one sub-folder per class "
            f"(e.g. {root}/cat/1.jpg, {root}/dog/2.jpg), or train/ and val/ folders laid out so"
        )
    classes = [d for d in root.iterdir() if d.is_dir()]
    if not classes:
        raise FileNotFoundError(f"{root} has no class sub-folders (expected {root}/<class>/<image>)")
    empty = [d.name for d in classes
             if not any(f.suffix.lower() in IMAGE_SUFFIXES for f in d.rglob("*") if f.is_file())]
    if empty:
        raise FileNotFoundError(
            f"{root}: class folder(s) {', '.join(sorted(empty))} hold no images "
            f"({', '.join(IMAGE_SUFFIXES)})"
        )


def _readable_folder(folder: Path, transform: Callable, on_error: str) -> ImageFolder:
    """An ImageFolder that reads with :func:`load_image`. Every file is decoded once up front,
    so a bad one is named before training starts: ``on_error="raise"`` stops there,
    ``"skip"`` leaves it out with a warning (the count is logged)."""
    from torchvision.datasets import ImageFolder

    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    dataset = ImageFolder(str(folder), transform=transform, loader=load_image)
    good, bad = [], []
    for sample in dataset.samples:
        try:
            load_image(sample[0])
            good.append(sample)
        except ImageDecodeError as err:
            if on_error == "raise":
                raise ImageDecodeError(f"{err} (on_error='skip' leaves such files out)") from err
            logger.warning("skipped: %s", err)
            bad.append(sample[0])
    if bad:
        logger.warning("%s: skipped %d unreadable image(s) of %d", folder, len(bad),
                       len(dataset.samples))
        dataset.samples = dataset.imgs = good
        dataset.targets = [target for _, target in good]
    dataset.skipped = bad
    return dataset


def image_folder_splits(root: str | Path, *, train_tf: Callable, eval_tf: Callable,
                        val_fraction: float = 0.2, seed: int = 0, on_error: str = "raise"
                        ) -> tuple[Dataset, Dataset, Dataset | None, list[str]]:
    """(train, val, test or None, class names) from an ImageFolder tree.

    With ``root/train`` and ``root/val`` (optionally ``root/test``) those are used as given;
    otherwise ``root`` is one ImageFolder split stratified by class into train / val.
    Unreadable images stop the run naming the file, or are skipped (``on_error="skip"``).
    """
    root = Path(root).expanduser()
    if (root / "train").is_dir():
        for part in ("train", "val"):
            _check_image_folder(root / part)
        train = _readable_folder(root / "train", train_tf, on_error)
        val = _readable_folder(root / "val", eval_tf, on_error)
        if val.classes != train.classes:
            raise ValueError(f"{root}: train classes {train.classes} differ from val classes {val.classes}")
        test = _readable_folder(root / "test", eval_tf, on_error) if (root / "test").is_dir() else None
        return train, val, test, train.classes
    _check_image_folder(root)
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    train_view = _readable_folder(root, train_tf, on_error)
    eval_view = copy.copy(train_view)          # the same (checked) files, the eval transform
    eval_view.transform = eval_tf
    targets = train_view.targets
    generator = torch.Generator().manual_seed(seed)
    train_idx, val_idx = [], []
    for c in range(len(train_view.classes)):
        members = [i for i, t in enumerate(targets) if t == c]
        order = torch.randperm(len(members), generator=generator).tolist()
        n_val = max(1, round(len(members) * val_fraction)) if len(members) > 1 else 0
        val_idx += [members[j] for j in order[:n_val]]
        train_idx += [members[j] for j in order[n_val:]]
    return Subset(train_view, sorted(train_idx)), Subset(eval_view, sorted(val_idx)), None, train_view.classes


def imagenet_labels() -> list[str]:
    """The 1,000 ImageNet-1k class names, in index order (from torchvision's weight metadata)."""
    from torchvision.models import ViT_B_16_Weights
    return list(ViT_B_16_Weights.IMAGENET1K_V1.meta["categories"])


def resolve_labels(labels: str | Sequence[str] | None, num_classes: int) -> list[str]:
    """Class names for a cfg's ``labels`` (a tuple, ``"imagenet-1k"`` or None -> indices)."""
    if labels == "imagenet-1k":
        names = imagenet_labels()
    elif labels is None or isinstance(labels, str):
        names = [str(i) for i in range(num_classes)]
    else:
        names = list(labels)
    if len(names) != num_classes:
        return [str(i) for i in range(num_classes)]
    return names
