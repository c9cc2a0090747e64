"""Settings, kept apart from learned state.

`ModelConfig` says what network and scoring pipeline to build; `TrainConfig` how to
train it. Both are plain dataclasses that round-trip through JSON, so a model folder
(`config.json` + `model.safetensors`) is readable by a person and loadable without
unpickling anything.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal, get_args

ModelKind = Literal["feature_ae", "patch_memory", "ae", "vae"]
FitMode = Literal["auto", "letterbox", "stretch", "tile"]  # anomaly.inspection.layout.prepare
PixelLoss = Literal["l2", "ssim", "l2+ssim"]

MODEL_KINDS: tuple[str, ...] = get_args(ModelKind)
FEATURE_KINDS: tuple[str, ...] = ("feature_ae", "patch_memory")  # built on the frozen ImageNet backbone
FIT_MODES: tuple[str, ...] = get_args(FitMode)  # see anomaly.inspection.layout.prepare
PIXEL_LOSSES: tuple[str, ...] = get_args(PixelLoss)


@dataclass
class ModelConfig:
    kind: ModelKind = "feature_ae"
    image_size: int = 256
    # How an image becomes the model's square input(s): "letterbox" (keep the aspect
    # ratio, pad), "stretch", "tile" (overlapping squares, `tiles` across the short side),
    # or "auto": letterbox, but tile long strips (aspect ratio >= 2) and, when tiles > 1,
    # every image. Tiles keep small defects on long or large images visible.
    fit_mode: FitMode = "auto"
    tiles: int = 1
    # Pixel autoencoders (ae, vae): width of the first layer, channels of the 1/16 latent map.
    base_channels: int = 24
    latent_channels: int = 16
    depth: int = 4  # down-sampling stages: the latent map is 1/2^depth of the working size
    # Training loss of pixel autoencoders and the residual used for their heatmap.
    loss: PixelLoss = "l2+ssim"
    residual: PixelLoss = "l2+ssim"
    kl_weight: float = 1e-3
    # SSIM residual: the worst of the SSIM maps at this many dyadic scales (the image
    # halved each time, as in multi-scale SSIM, Wang et al. 2003, which uses 5). A pixel
    # autoencoder blurs fine texture, so the classic 11-px window alone sees mostly that
    # blur; at coarser scales the missing or foreign structure of a large defect shows
    # clearly. Capped so the coarsest scale is still 16 px; 1 = single scale.
    ssim_levels: int = 5
    # Feature autoencoder: EfficientNet-Lite0 blocks whose outputs are reconstructed.
    feature_blocks: tuple[int, ...] = (2, 4, 10)
    feature_stride: int = 8
    # Pixels of the working-size image mirrored past each border before the backbone (a
    # multiple of 16, the coarsest tapped block's stride); 0 = the convolutions' zero
    # padding meets the image edge.
    feature_border: int = 16
    # Scale the standardised features so each tapped block weighs the same in the
    # residual and the patch distance, not each channel. Off: it lost accuracy on
    # textures (docs/decisions.md).
    balance_feature_blocks: bool = False
    feature_hidden: int = 128
    # Bottleneck channels (at half the feature grid).
    feature_latent: int = 48
    # Patch memory (PatchCore-style): how many normal patch features are kept (chosen by
    # greedy coreset selection so they cover all the training patches) and the side of
    # the neighbourhood each patch feature averages over. More patches cover varied
    # parts better (a small, varied set lost accuracy at 2048) at the cost of search time.
    memory_size: int = 4096
    patch_neighbourhood: int = 3
    # The memory search ranks candidates on the memory's leading principal axes (this
    # many; 0 = all channels, exact), one candidate per block of the memory, and
    # measures the blocks' candidates on all channels (networks.PatchMemory.forward):
    # a fraction of the exact search's work for nearly always the same nearest patch
    # (docs/decisions.md).
    memory_search_dims: int = 48
    memory_search_blocks: int = 8
    # Feature autoencoder: also keep such a memory and add its distance to the
    # autoencoder's evidence (each in units of its own alarm level).
    feature_memory: bool = True
    # Feature autoencoder: a small head trained on synthetic defects predicts the defect
    # mask from the feature residuals; its probability p scales the residual by (1 + p).
    segmentation_head: bool = True
    # The head also sees the standardised features themselves, not only their residual
    # (as DRAEM's discriminator sees the image beside its reconstruction). Off: the
    # image score did not gain, since p only scales the residual.
    head_sees_features: bool = False
    # Feature autoencoder and head: depthwise-separable 3x3 layers (networks.conv3x3):
    # faster, but a slightly coarser defect outline, so it is opt-in.
    separable_convs: bool = False
    # Heatmap smoothing (Gaussian sigma, in pixels of the working size); None = the
    # family's default: 2 for the feature models, whose maps are already bilinear
    # upsamplings of an 8-px grid, 4 for the pixel autoencoders, whose per-pixel residual
    # is noisy. Wider smoothing spreads a small defect's peak into its calm surroundings.
    smoothing_sigma: float | None = None
    # Calibrate the frame's outer band (an eighth of the size: the 2 mirrored margin cells
    # and 2 more) ring by ring (distance to the border): each ring's median and upper tail
    # on held-out good images are brought down to those of the band just inside. Near the
    # frame edge a convolutional model sees less context, so on textures that fill the
    # frame good parts score highest there. It costs some sensitivity to defects that
    # touch the edge and changes nothing on objects on a plain background.
    edge_calibration: bool = True

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"unknown model kind {self.kind!r}; choose from {', '.join(MODEL_KINDS)}")
        if self.image_size < 64 or self.image_size % 32:
            raise ValueError(f"image size must be a multiple of 32 and >= 64, got {self.image_size}")
        if not 2 <= self.depth <= 7 or self.image_size % (2**self.depth):
            raise ValueError(f"depth must be 2..7 and divide the image size by 2^depth, got {self.depth}")
        if self.fit_mode not in FIT_MODES:
            raise ValueError(f"fit mode must be one of {', '.join(FIT_MODES)}; got {self.fit_mode!r}")
        if self.tiles < 1:
            raise ValueError(f"tiles must be >= 1, got {self.tiles}")
        for name in ("loss", "residual"):
            if getattr(self, name) not in PIXEL_LOSSES:
                raise ValueError(f"{name} must be one of {', '.join(PIXEL_LOSSES)}; got {getattr(self, name)!r}")
        if self.kind != "feature_ae":
            self.segmentation_head = False  # the head reads the feature autoencoder's residual
            self.feature_memory = False  # patch_memory is the memory alone
        if self.memory_size < 1 or self.patch_neighbourhood < 1 or self.patch_neighbourhood % 2 == 0:
            raise ValueError("memory size must be >= 1 and the patch neighbourhood an odd number >= 1")
        if self.memory_search_dims < 0 or self.memory_search_blocks < 1:
            raise ValueError("memory search dims must be >= 0 (0 = exact) and search blocks >= 1")
        if self.memory_search_dims and self.memory_size % self.memory_search_blocks:
            raise ValueError(
                f"memory size ({self.memory_size}) must be a multiple of the memory search blocks "
                f"({self.memory_search_blocks}), or use an exact search (memory search dims 0)"
            )
        if self.feature_border < 0 or self.feature_border % 16 or self.feature_border >= self.image_size:
            raise ValueError(f"feature border must be a multiple of 16 below the image size, got {self.feature_border}")
        if self.ssim_levels < 1:
            raise ValueError(f"ssim levels must be >= 1, got {self.ssim_levels}")
        self.feature_blocks = tuple(int(b) for b in self.feature_blocks)
        if self.smoothing_sigma is None:
            self.smoothing_sigma = 2.0 if self.kind in FEATURE_KINDS else 4.0
        if self.smoothing_sigma <= 0:
            raise ValueError(f"smoothing sigma must be > 0, got {self.smoothing_sigma}")

    @property
    def grid(self) -> tuple[int, str, int]:
        """(working size, fit mode, tiles): how images reach the model (layout.prepare)."""
        return self.image_size, self.fit_mode, self.tiles

    @property
    def ssim_scales(self) -> int:
        """SSIM scales actually used at this working size (coarsest >= 16 px)."""
        return max(1, min(self.ssim_levels, (self.image_size // 16).bit_length()))

    @property
    def residual_kind(self) -> str:
        return "feature" if self.kind in FEATURE_KINDS else self.residual


@dataclass
class AugmentConfig:
    """Random changes applied to training images: real parts never sit exactly alike."""

    # Mirror images are off by default: many parts are chiral (a print, an engraving, a
    # thread, a nut's lobes, the order of a cable's wires), and a model shown mirrored
    # good parts learns that a part put in flipped, or a mark printed reversed, is good.
    # Turn them on (--hflip, --vflip) for parts and textures that look alike mirrored.
    hflip: bool = False
    vflip: bool = False
    rotate_degrees: float = 5.0
    shift_fraction: float = 0.03
    brightness: float = 0.1
    contrast: float = 0.1


@dataclass
class TrainConfig:
    # Upper bound; training stops earlier when the held-out loss stalls (patience).
    # None = the family's default (FAMILY_EPOCHS): an epoch draws as many rows as there
    # are training images, so a small set needs many epochs to get enough steps.
    epochs: int | None = None
    # Feature autoencoder: bank rows drawn per epoch are as many as there are training
    # images, but at most this many. The bank holds a bounded number of views
    # (feature_copies), so past a few hundred images more rows per epoch mostly repeat
    # views while the epoch's time keeps growing with the count. 0 = no cap.
    max_epoch_rows: int = 256
    # Past this many good images (train/good), training uses a random subset of this
    # size (seeded; the rest are not read), and of validation/good at most the held-out
    # share of it. Each pass over the images (reading, feature statistics, the bank, the
    # memory, calibration) grows with the count while the model's capacity does not, so
    # this bounds training time and memory. 0 = use all.
    max_train_images: int = 1000
    batch_size: int = 16
    learning_rate: float = 1e-3
    weight_decay: float = 1e-5
    seed: int = 0
    holdout_fraction: float = 0.15
    min_holdout: int = 4
    patience: int = 8
    target_false_reject: float = 0.01
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    threads: int = 0
    # Feature autoencoder only. Backbone features of augmented copies of each training
    # image are computed once (the frozen backbone is most of the cost) and reused by
    # every epoch; 0 picks the count from the dataset size.
    feature_copies: int = 0
    # Share of those copies that also get a painted synthetic defect (exact mask): the
    # autoencoder learns to restore the good features from them, the head to find them.
    synthetic_fraction: float = 0.5
    head_epochs: int = 4
    # Models with a patch memory: score every training image without its own memory
    # patches and leave out of the memory and the threshold those that stand out from
    # the rest by a robust z-score above suspect_z (anomaly.training.screening): defective
    # parts hidden in a "good" folder. 0 lists the suspects without leaving any out.
    screen_training: bool = True
    suspect_z: float = 3.5
    # Pixel autoencoders only: weight of a perceptual term (distance between frozen
    # ImageNet features of reconstruction and input) added to the loss; 0 = off.
    perceptual_weight: float = 0.0
    # Pixel autoencoders only: weight of an adversarial term (a patch discriminator
    # trained alongside tells reconstructions from inputs; anomaly.training.sharpening); 0 = off.
    adversarial_weight: float = 0.0


# Epochs of each family when TrainConfig.epochs is None: the feature autoencoder's
# residual keeps improving longer than a pixel autoencoder's reconstruction.
FAMILY_EPOCHS = {"feature_ae": 80, "patch_memory": 80, "ae": 60, "vae": 60}


def settle(model: ModelConfig, train: TrainConfig) -> tuple[ModelConfig, TrainConfig]:
    """The rules that join the two configs, applied once (by `Detector`): the family's
    epochs when none are set, and no segmentation head without synthetic defects to learn from."""
    if train.epochs is None:
        train = replace(train, epochs=FAMILY_EPOCHS[model.kind])
    if model.segmentation_head and train.synthetic_fraction <= 0:
        model = replace(model, segmentation_head=False)
    return model, train


def to_dict(obj: Any) -> dict[str, Any]:
    return asdict(obj)


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Build a config dataclass from a dict, ignoring unknown keys (newer files) and
    filling nested dataclasses."""
    known = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            continue
        if key == "augment" and isinstance(value, dict):
            value = from_dict(AugmentConfig, value)
        if key == "feature_blocks" and isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    if cls is ModelConfig and "kind" in data:  # files written before these settings keep their behaviour
        kwargs.setdefault("ssim_levels", 1)
        kwargs.setdefault("feature_memory", False)
        kwargs.setdefault("fit_mode", "letterbox")
        kwargs.setdefault("feature_border", 0)
        kwargs.setdefault("edge_calibration", False)
        kwargs.setdefault("memory_search_dims", 0)
        kwargs.setdefault("smoothing_sigma", 4.0)
    return cls(**kwargs)
