"""Image I/O at the boundaries: decoding any file to RGB on [-1, 1], atomic PNG writes, grids and
heat maps for people to look at. Inside the project images are ``[C, H, W]`` floats on [-1, 1]."""

from __future__ import annotations

import errno
import io
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, UnidentifiedImageError
from torch import Tensor
from torchvision.transforms import v2

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".ppm")
TEMPORARY_SUFFIX = ".tmp"  # files being written: ".{name}.{random}.tmp" beside their target


# -- reading --------------------------------------------------------------------------------------


def read_range(file: str, offset: int, size: int) -> bytes:
    with open(file, "rb") as handle:
        handle.seek(offset)
        return handle.read(size)


def read_bytes(path: Path, offset: int = 0, size: int = -1) -> bytes:
    """``size`` bytes of ``path`` from ``offset``; an ``OSError`` that says why in words
    ("a dangling symbolic link", "a folder, not an image file"), not errno's repr."""
    try:
        return read_range(str(path), offset, size)
    except OSError as error:
        raise OSError(file_problem(path, error)) from error


def file_problem(path: Path, error: OSError) -> str:
    """Why ``path`` cannot be read, in words (symbolic links and folders named like images included)."""
    if path.is_symlink() and not path.exists():
        looped = error.errno == errno.ELOOP or os.path.realpath(path) == str(path.absolute())
        return "a symbolic link in a loop" if looped else f"a dangling symbolic link (to {os.readlink(path)})"
    if path.is_dir():
        return "a folder, not an image file"
    return error.strerror or str(error)


def walk_folder(root: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> Iterator[tuple[Path, str | None]]:
    """Every entry under ``root`` whose name ends in one of ``suffixes`` (lower case; ``()``: every
    name), following linked folders once each; a linked folder that leads back to one already walked
    is yielded with its problem."""
    seen = {os.path.realpath(root)}
    for folder, folders, files in os.walk(root, followlinks=True):
        # real folders first, so that a link to one of them is the duplicate, never the folder itself
        folders.sort(key=lambda name: (Path(folder, name).is_symlink(), name))
        for name in list(folders):
            path = Path(folder, name)
            if os.path.realpath(path) in seen:  # never walk a folder twice: images twice, or a loop
                folders.remove(name)
                if path.is_symlink():
                    yield path, f"a symbolic link to a folder already listed ({os.readlink(path)})"
                continue
            seen.add(os.path.realpath(path))
            if suffixes and name.lower().endswith(suffixes):
                yield path, None  # a folder named like an image: listed, so it is skipped with the reason
        yield from ((Path(folder, name), None) for name in files if name.lower().endswith(suffixes or ""))


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode as 8-bit RGB: 16-bit grey is rescaled (PIL's own convert would clip it),
    alpha is composited on white, palettes are expanded."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / peak * 255 + 0.5, 0, 255).astype(np.uint8))
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert("RGB")


def decode_image(data: bytes) -> Image.Image:
    """Fully decoded RGB image; raises ``OSError``/``ValueError`` for corrupt or truncated data."""
    if not data:
        raise ValueError("an empty file (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:  # its message names an in-memory buffer, not the reason
        raise ValueError(f"not an image format PIL reads ({len(data)} bytes starting {data[:8]!r})") from None
    with image:
        image.load()
        return to_rgb(image)


def to_tensor(image: Image.Image) -> Tensor:
    """PIL RGB -> ``[3, H, W]`` float on [-1, 1]."""
    array = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)
    return array.float() / 127.5 - 1


def image_problem(image: Image.Image, min_size: int, max_aspect: float = 4.0) -> str | None:
    """Why an image cannot be used at ``min_size`` pixels (one policy for data tools and data
    modules): a side below ``min_size`` (it would have to be upscaled), or a side more than
    ``max_aspect`` times the other (a centre crop would keep little of it). None if usable."""
    width, height = image.size
    if min(width, height) < min_size:
        return f"too small: {width}x{height} < {min_size}"
    if max(width, height) > max_aspect * min(width, height):
        return f"aspect ratio {width}x{height} beyond {max_aspect:g}:1"
    return None


def eval_transform(size: int) -> v2.Transform:
    """Short side resized to ``size`` (antialiased bicubic), centre crop."""
    return v2.Compose(
        [v2.Resize(size, interpolation=v2.InterpolationMode.BICUBIC, antialias=True), v2.CenterCrop(size)]
    )


def read_png(path: Path) -> Tensor:
    """An image file -> ``[3, H, W]`` on [-1, 1]."""
    return to_tensor(decode_image(Path(path).read_bytes()))


# -- writing --------------------------------------------------------------------------------------


def to_uint8(image: Tensor) -> np.ndarray:
    """``[C, H, W]`` on [-1, 1] -> ``[H, W, C]`` (or ``[H, W]`` for one channel) uint8."""
    array = ((image.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    return array[..., 0] if array.shape[-1] == 1 else array


def usual_file_mode() -> int:
    """The permissions of any file the user makes: ``0666 & ~umask``."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_atomic(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """``write(file)`` into a temporary file beside ``path``, then rename: a crash never leaves half
    a file where a finished one is expected. The file gets the usual permissions (``0666 & ~umask``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX)
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
        os.chmod(temporary, usual_file_mode())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda file: file.write(text.encode()))


def save_png(image: Tensor | np.ndarray | Image.Image, path: Path) -> None:
    """Atomically write an 8-bit PNG: a ``[C, H, W]`` tensor on [-1, 1], a uint8 array or a PIL image."""
    if isinstance(image, Tensor):
        image = to_uint8(image)
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    write_atomic(path, lambda file: image.save(file, format="PNG"))


def remove_temporaries(folder: Path) -> int:
    """Delete files left half-written by an interrupted run under ``folder``; returns how many."""
    leftovers = [p for p in folder.rglob(f".*{TEMPORARY_SUFFIX}") if p.is_file()] if folder.is_dir() else []
    for path in leftovers:
        path.unlink(missing_ok=True)
    return len(leftovers)


# -- pictures for people --------------------------------------------------------------------------


def heat_map(values: Tensor, vmax: float | None = None) -> np.ndarray:
    """``[H, W]`` non-negative values -> ``[H, W, 3]`` uint8, black-red-yellow-white ("hot")."""
    scale = float(vmax) if vmax is not None else float(values.max().clamp_min(1e-12))
    v = (values.float().cpu() / scale).clamp(0, 1).numpy()
    rgb = np.stack([np.clip(3 * v, 0, 1), np.clip(3 * v - 1, 0, 1), np.clip(3 * v - 2, 0, 1)], axis=-1)
    return (rgb * 255).round().astype(np.uint8)


def labelled_grid(rows: Sequence[tuple[str, Sequence[Tensor]]], cell: int = 96, label_width: int = 110) -> Image.Image:
    """Rows of ``[C, H, W]`` images on [-1, 1] (a batch, or images of different sizes), each row
    labelled on the left, every image scaled (nearest neighbour) to ``cell`` pixels high so that
    small images stay visible."""
    pictures = []
    for _, images in rows:
        scaled = []
        for image in images:
            image = image.detach().float().cpu()[None]
            image = image.expand(-1, 3, -1, -1) if image.shape[1] == 1 else image
            width = max(1, round(cell * image.shape[-1] / image.shape[-2]))
            scaled.append(to_uint8(F.interpolate(image, size=(cell, width), mode="nearest")[0]))
        pictures.append(np.concatenate(scaled, axis=1))
    width = max(p.shape[1] for p in pictures)
    canvas = Image.new("RGB", (label_width + width, cell * len(rows)), "white")
    draw = ImageDraw.Draw(canvas)
    for index, ((label, _), picture) in enumerate(zip(rows, pictures, strict=True)):
        canvas.paste(Image.fromarray(picture), (label_width, index * cell))
        draw.text((6, index * cell + cell // 2 - 6), label, fill="black")
    return canvas
