"""The pretraining and linear-evaluation configs, declared once as typed models.

Each section is a :class:`~solo_ext.utils.declared.Declared` model: strict types, choices as
literals, ranges as field constraints, unknown keys refused with the near miss named, defaults
(solo-learn's) on the fields. Cross-field rules are model validators. The blocks a lower layer
owns are declared there and composed here: a weight schedule (``solo_ext.schedulers``), a
regularizer block (``solo_ext.regularizers``) and an augmentation pipeline (``solo_ext.data``).
Rules that need the backbone (block indices, the masked patches) read ``depth`` and
``num_patches`` from the validation context.
"""

from __future__ import annotations

import inspect
import os
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, get_args

import torch
from lightning.pytorch.trainer.connectors.accelerator_connector import _PRECISION_INPUT_STR
from pydantic import Field, field_validator, model_validator

from solo_ext.backbones.vit import BACKBONE_PRESETS, Feature, backbone_arguments
from solo_ext.data.augmentations import AugmentationSpec, crop_size_of
from solo_ext.data.dali import INSTALL_HINT, dali_installed, dali_unsupported
from solo_ext.data.info import DATASETS
from solo_ext.data.loaders import DATA_FORMATS, image_backend
from solo_ext.methods import METHODS
from solo_ext.methods.mae import MAEKwargs
from solo_ext.optim.factory import OPTIMIZERS as OPTIMIZERS_BY_NAME
from solo_ext.optim.factory import build_optimizer
from solo_ext.utils.declared import (
    BelowOne,
    Declared,
    ImageCount,
    Name,
    NonNegative,
    NonNegativeInt,
    OpenUnitInterval,
    Positive,
    PositiveInt,
    Rule,
    SampleCount,
    UnitInterval,
)
from solo_ext.utils.errors import NO_VALUE, FieldError


def available_cpus() -> int:
    """CPUs this process may run on (the affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# data loader workers when a recipe sets none: solo-learn's 4, never more than the CPUs
DEFAULT_WORKERS = min(4, available_cpus())


OPTIMIZERS = ("sgd", "lars", "adam", "adamw")
# What solo-learn's parse_cfg fills into optimizer.kwargs when a recipe leaves a key out (its
# solo/args/pretrain.py and linear.py); written into args.json so a run shows what it used.
OPTIMIZER_KWARGS_DEFAULTS: dict[str, dict[str, Any]] = {
    "sgd": {"momentum": 0.9},
    "lars": {"momentum": 0.9, "eta": 1e-3, "clip_lr": False, "exclude_bias_n_norm": False},
    "adamw": {"betas": [0.9, 0.999]},
}
LR_SCHEDULERS = ("warmup_cosine", "step", "none")
# the online kNN's train bank: "batches" = the features of the epoch's training batches as the
# method sees them (solo-learn's); "clean" = the training set through the val transform (ours)
KNN_BANKS = ("batches", "clean")
# Lightning's names (its aliases 16, 32, bf16, ... are read by the compatibility pass); what it
# makes of one on this machine is asked of Lightning (solo_ext.config.lightning)
PRECISIONS = get_args(_PRECISION_INPUT_STR)
MODES = ("linear", "partial", "finetune", "probe")
# what the offline probe's heads train on: the training images as they are, or through the
# pretraining run's first augmentation pipeline (solo_ext.run.probe)
PROBE_VIEWS = ("clean", "augmented")
if TYPE_CHECKING:  # the type checker sees a name as a str; pydantic, below, the literal of its choices
    DatasetName = str
    DataFormat = str
    BackboneName = str
    OptimizerName = str
    LRSchedulerName = str
    KNNBank = str
    Precision = str
    Mode = str
    ProbeViews = str
else:
    DatasetName = Literal[tuple(DATASETS)]
    DataFormat = Literal[DATA_FORMATS]
    BackboneName = Literal[tuple(BACKBONE_PRESETS)]
    OptimizerName = Literal[OPTIMIZERS]
    LRSchedulerName = Literal[LR_SCHEDULERS]
    KNNBank = Literal[KNN_BANKS]
    Precision = Literal[PRECISIONS]
    Mode = Literal[MODES]
    ProbeViews = Literal[PROBE_VIEWS]
# The Trainer kwargs we set ourselves.
TRAINER_RESERVED = {"logger", "callbacks", "enable_checkpointing", "default_root_dir"}


@cache
def trainer_keys() -> frozenset[str]:
    from lightning.pytorch import Trainer

    return frozenset(inspect.signature(Trainer.__init__).parameters) - {"self"} - TRAINER_RESERVED


_FRACTIONS = "must be -1 or 1 (all data) or in (0, 1)"


def _fraction_ok(fraction: float) -> bool:
    return fraction in (-1, 1) or 0 < fraction < 1


def _absolute(path: str | None) -> str | None:
    return None if path is None else os.path.abspath(os.path.expanduser(path))


# ----------------------------------------------------------------------------- sections
class Data(Declared):
    dataset: DatasetName
    train_path: str | None = None
    val_path: str | None = None
    format: DataFormat = "image_folder"
    num_workers: NonNegativeInt = Field(
        DEFAULT_WORKERS, json_schema_extra={"default_text": "min(4, the CPUs this process may use)"}
    )
    fraction: float = -1.0
    # derived (re-derived when args.json is read back)
    num_classes: int | None = None

    _normalise_paths = field_validator("train_path", "val_path")(_absolute)

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "fraction",
            lambda d, _: _fraction_ok(d.fraction),
            _FRACTIONS,
        ),
        Rule(
            "format",
            lambda d, _: d.format != "dali" or dali_installed(),
            f"NVIDIA DALI is not installed here; install the extra with {INSTALL_HINT} "
            "or use data.format=image_folder (same folder layout)",
        ),
        Rule(
            "format",
            lambda d, _: d.format != "dali" or image_backend(d.dataset, d.format) == "dali",
            lambda d, _: (
                "reads image folders (imagenet, imagenet100, tiny-imagenet, custom), "
                f"not dataset {d.dataset}; use data.format=image_folder"
            ),
        ),
    )


class PretrainData(Data):
    no_labels: bool = False
    num_large_crops: int | None = None
    num_small_crops: int | None = None
    # solo-learn's key for its TFRecord DALI reader; accepted and ignored
    ignored: ClassVar[frozenset[str]] = frozenset({"tfrecord"})


class BackboneKwargs(Declared):
    """MaskedViT's arguments; None leaves the backbone's preset."""

    img_size: PositiveInt | None = None
    patch_size: PositiveInt | None = None
    in_chans: PositiveInt | None = None
    embed_dim: PositiveInt | None = None
    depth: PositiveInt | None = None
    num_heads: PositiveInt | None = None
    mlp_ratio: Positive | None = None
    qkv_bias: bool | None = None
    drop_path_rate: BelowOne | None = None

    def given(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class Backbone(Declared):
    name: BackboneName
    kwargs: BackboneKwargs = BackboneKwargs()

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "kwargs.patch_size",
            lambda b, _: b.arguments()["img_size"] % b.arguments()["patch_size"] == 0,
            lambda b, _: f"must divide backbone.kwargs.img_size={b.arguments()['img_size']}",
            lambda b, _: b.arguments()["patch_size"],
        ),
        Rule(
            "kwargs.num_heads",
            lambda b, _: b.arguments()["embed_dim"] % b.arguments()["num_heads"] == 0,
            lambda b, _: f"must divide backbone.kwargs.embed_dim={b.arguments()['embed_dim']}",
            lambda b, _: b.arguments()["num_heads"],
        ),
        Rule(
            "kwargs.embed_dim",
            lambda b, _: b.arguments()["embed_dim"] % 4 == 0,
            "must be divisible by 4 (2-D sin-cos positions)",
            lambda b, _: b.arguments()["embed_dim"],
        ),
    )

    def arguments(self) -> dict[str, Any]:
        return backbone_arguments(self.name, self.kwargs.given())

    def context(self) -> dict[str, int]:
        """What the method's rules need to know of the backbone."""
        args = self.arguments()
        return {"depth": args["depth"], "num_patches": (args["img_size"] // args["patch_size"]) ** 2}

    def dump(self) -> dict[str, Any]:
        return {"name": self.name, "kwargs": self.kwargs.given()}


def optimizer_refusal(name: str, lr: float, weight_decay: float, kwargs: dict[str, Any]) -> str | None:
    """Why the real optimizer (torch's, or our LARS) refuses these keywords, in one line, or
    None: it is built on a dummy parameter and takes one step, which is where some keywords are
    first read."""
    param = torch.nn.Parameter(torch.zeros(2))
    param.grad = torch.ones(2)
    try:
        build_optimizer(name, [{"params": [param]}], lr, weight_decay, kwargs).step()
    except (TypeError, ValueError, IndexError, RuntimeError, KeyError, AttributeError) as err:
        errors = getattr(err, "errors", None)  # pydantic's (LARS's declared arguments): the first
        text = errors()[0]["msg"] if callable(errors) else str(err)
        return " ".join(f"{type(err).__name__}: {text}".split())
    return None


def refused_keyword(
    name: str, lr: float, weight_decay: float, kwargs: dict[str, Any], given
) -> FieldError | None:
    """The one-line error for the keyword the optimizer refuses (the one whose removal makes it
    work, the user's keys tried first), naming the optimizer's default for it; None if none."""
    refusal = optimizer_refusal(name, lr, weight_decay, kwargs)
    if refusal is None:
        return None
    for key in [*given, *(k for k in kwargs if k not in given)]:
        if optimizer_refusal(name, lr, weight_decay, {n: v for n, v in kwargs.items() if n != key}) is None:
            default = inspect.signature(OPTIMIZERS_BY_NAME[name]).parameters.get(key)
            hint = "" if default is None else f" (its default: {default.default!r})"
            return FieldError(
                f"kwargs.{key}", kwargs[key], f"the {name} optimizer refuses it: {refusal}{hint}"
            )
    return FieldError("kwargs", kwargs, f"the {name} optimizer refuses them: {refusal}")


class _OptimizerBase(Declared):
    name: OptimizerName
    batch_size: PositiveInt
    lr: Positive
    weight_decay: NonNegative = 0.0
    kwargs: dict[str, Any] = {}
    exclude_bias_n_norm_wd: bool = False

    @model_validator(mode="after")
    def _solo_learn_kwargs(self) -> _OptimizerBase:
        given = self.kwargs
        self.kwargs = {**OPTIMIZER_KWARGS_DEFAULTS.get(self.name, {}), **given}
        error = refused_keyword(self.name, self.lr, self.weight_decay, self.kwargs, given)
        if error is not None:
            raise error
        return self


class PretrainOptimizer(_OptimizerBase):
    classifier_lr: Positive | None = None

    @model_validator(mode="after")
    def _classifier_lr(self) -> PretrainOptimizer:
        if self.classifier_lr is None:
            self.classifier_lr = self.lr
        return self


class LinearOptimizer(_OptimizerBase):
    # layer-wise lr decay of fine-tuning (BEiT/MAE); 0 switches it off
    layer_decay: UnitInterval = 0.0


class LRScheduler(Declared):
    name: LRSchedulerName = "warmup_cosine"
    warmup_epochs: NonNegative = 10
    warmup_start_lr: NonNegative = 3e-5
    min_lr: NonNegative = 0.0
    lr_decay_steps: list[PositiveInt] | None = None
    interval: Literal["step", "epoch"] = "step"

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "lr_decay_steps",
            lambda sched, _: sched.name != "step" or bool(sched.lr_decay_steps),
            "the step scheduler needs a list of positive epochs",
        ),
    )


class KNN(Declared):
    # solo-learn's online kNN: k 20, T 0.07, euclidean; its bank is the training batches' features
    enabled: bool = False
    k: PositiveInt = 20
    T: Positive = 0.07
    distance_func: Literal["cosine", "euclidean"] = "euclidean"
    bank: KNNBank = "batches"
    # bank: batches keeps at most this many rows per process, a uniform sample of the epoch's
    # training features (None: the whole epoch)
    max_bank: PositiveInt | None = None


class Checkpoint(Declared):
    enabled: bool = False
    dir: Name = "trained_models"
    frequency: PositiveInt = 1
    keep_prev: bool = False
    # mid-epoch states (for long epochs on preemptible clusters), replaced at each save
    every_n_steps: PositiveInt | None = None
    every_n_minutes: Positive | None = None

    _normalise_dir = field_validator("dir")(_absolute)


class AutoResume(Declared):
    enabled: bool = False
    max_hours: Positive = 36


class Wandb(Declared):
    enabled: bool = False
    entity: str | None = None
    project: Name = "solo-learn"
    offline: bool = False


class Probe(Declared):
    """``mode: probe``: the grid of linear heads trained together on cached frozen features
    (solo_ext.eval.probe); the setting is chosen on ``holdout_fraction`` of the training set."""

    lrs: Annotated[list[Positive], Field(min_length=1)] = [0.01, 0.03, 0.1, 0.3, 1.0]
    weight_decays: Annotated[list[NonNegative], Field(min_length=1)] = [0.0, 1e-4, 1e-3, 1e-2]
    batchnorm: Annotated[list[bool], Field(min_length=1)] = [True, False]
    epochs: PositiveInt = 100
    batch_size: PositiveInt = 256
    momentum: BelowOne = 0.9
    holdout_fraction: OpenUnitInterval = 0.2
    train_views: ProbeViews = "clean"
    # with train_views: augmented, the number of augmented passes over the training set
    num_views: PositiveInt = 1
    # the same grid on a randomly initialised backbone of the same architecture, reported beside
    random_baseline: bool = True

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "num_views",
            lambda p, _: p.train_views == "augmented" or p.num_views == 1,
            "only used with train_views=augmented; leave it at 1",
        ),
    )


class LinearDiagnostics(Declared):
    enabled: bool = True
    max_samples: SampleCount = 2048


class Diagnostics(LinearDiagnostics):
    spectrum_frequency: PositiveInt = 1
    validate_before_training: bool = False


class Reconstructions(Declared):
    enabled: bool = True
    frequency: PositiveInt = 1
    num_images: ImageCount = 8


# method name -> its kwargs model, declared beside each method (solo_ext.methods) as its Kwargs
METHOD_KWARGS: dict[str, type[MAEKwargs]] = {name: method.Kwargs for name, method in METHODS.items()}
if TYPE_CHECKING:  # the type checker sees a name as a str; pydantic, below, the literal of its choices
    MethodName = str
else:
    MethodName = Literal[tuple(METHOD_KWARGS)]


# ----------------------------------------------------------------------------- top level
class _Run(Declared):
    """The run and Trainer keys every entry point shares; any other Lightning Trainer argument
    is accepted as is."""

    model_config = {**Declared.model_config, "extra": "allow"}
    where: ClassVar[str] = "the top level"
    # Keys solo-learn and the MAGMA recipes carry that MAE does not use (momentum is copy-pasted
    # into solo-learn's imagenet/mae.yaml; auto_umap needs umap-learn). Accepted, ignored; derived
    # keys are re-derived.
    ignored: ClassVar[frozenset[str]] = frozenset(
        # and what a run writes beside its config in args.json, so args.json reads back as a config
        {"momentum", "auto_umap", "performance", "derived", "run_id", "wandb_run_id", "job_identity"}
    )

    name: Name
    seed: int = 5
    resume_from_checkpoint: str | None = None
    # names this run once and for all: a job started again with the same run_name (and the same
    # settings) continues it, wherever the scheduler puts it
    run_name: Name | None = None
    max_epochs: PositiveInt = 100
    devices: int | str | list[int] = 1
    num_nodes: PositiveInt = 1
    accelerator: str = "auto"
    strategy: Any = "auto"
    precision: Precision = "32-true"
    accumulate_grad_batches: PositiveInt = 1
    knn_eval: KNN = KNN()
    checkpoint: Checkpoint = Checkpoint()
    auto_resume: AutoResume = AutoResume()
    wandb: Wandb = Wandb()
    scheduler: LRScheduler = LRScheduler()

    @classmethod
    def accepted_keys(cls) -> set[str]:
        return super().accepted_keys() | trainer_keys()

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "resume_from_checkpoint",
            lambda run, _: run.resume_from_checkpoint is None or os.path.isfile(run.resume_from_checkpoint),
            "no such checkpoint file",
        ),
    )

    _normalise_resume = field_validator("resume_from_checkpoint")(_absolute)


class PretrainConfig(_Run):
    method: MethodName
    backbone: Backbone
    # checked against the method's Kwargs (METHOD_KWARGS[method]) once the backbone is known
    method_kwargs: dict[str, Any] = {}
    data: PretrainData
    augmentations: Annotated[list[AugmentationSpec], Field(min_length=1)]
    optimizer: PretrainOptimizer
    diagnostics: Diagnostics = Diagnostics()
    reconstructions: Reconstructions = Reconstructions()
    # torch.compile the encoder's forward and the decoder (checkpoint keys unchanged)
    compile: bool = False

    rules: ClassVar[tuple[Rule, ...]] = _Run.rules + (
        Rule(
            lambda c, _: "augmentations[{}].{}.{}".format(*_found_gap(c)[:3]),
            lambda c, _: _dali_gap(c) is None,
            lambda c, _: f"{_found_gap(c)[3]}; switch {_found_gap(c)[1]} off or use data.format=image_folder",
            lambda c, _: getattr(
                getattr(c.augmentations[_found_gap(c)[0]], _found_gap(c)[1]), _found_gap(c)[2]
            ),
        ),
        Rule(
            "backbone.kwargs.img_size",
            lambda c, _: c.backbone.arguments()["img_size"] == _largest_crop(c),
            lambda c, _: (
                f"must equal the largest augmentations crop_size ({_largest_crop(c)}); "
                f"set backbone.kwargs.img_size={_largest_crop(c)}"
            ),
            lambda c, _: c.backbone.arguments()["img_size"],
        ),
    )


def _dali_gap(c: PretrainConfig) -> tuple[int, str, str, str] | None:
    """(entry, section, field, why) of the first augmentation DALI cannot do, under dali."""
    for i, aug in enumerate(c.augmentations if c.data.format == "dali" else ()):
        lacking = dali_unsupported(aug.model_dump())
        if lacking:
            return (i, *lacking)
    return None


def _found_gap(c: PretrainConfig) -> tuple[int, str, str, str]:
    """_dali_gap where its rule has failed, so there is one."""
    gap = _dali_gap(c)
    assert gap is not None
    return gap


def _largest_crop(c: PretrainConfig) -> int:
    return max(crop_size_of(aug.crop_size, c.data.dataset) for aug in c.augmentations)


def _mode(c: LinearConfig) -> str:
    return c.mode or ("finetune" if c.finetune else "linear")


def _partial_allowed(c: LinearConfig) -> str:
    depth = c.backbone.arguments()["depth"]
    return f"0.5 (the MLP of the last block) or an integer in [1, {depth}] (the backbone's depth)"


def _mixing(c: LinearConfig) -> bool:
    return c.mixup > 0 or c.cutmix > 0


def _unread_by_probe(key: str, default: Any, why: str) -> Rule:
    """The rule that ``key`` keeps its default under mode=probe, which does not read it."""
    return Rule(key, lambda c, _: _mode(c) != "probe" or getattr(c, key) == default, why)


class LinearConfig(_Run):
    method: str = "linear"  # the run folder's name; the rule below says where a pretraining method goes
    pretrained_feature_extractor: Name | None = None
    allow_random_backbone: bool = False
    pretrain_method: str | None = None
    backbone: Backbone
    mode: Mode | None = None
    partial_blocks: int | float | None = None
    # None: the pretraining run's own (its online probe's features, from args.json), else cls
    features: Feature | None = None
    batchnorm_head: bool = False
    finetune: bool = False
    label_smoothing: BelowOne = 0.0
    mixup: NonNegative = 0.0
    cutmix: NonNegative = 0.0
    auto_augment: bool = False
    data: Data
    # required by every mode but probe, whose heads' grid is probe.lrs x probe.weight_decays
    optimizer: LinearOptimizer | None = None
    probe: Probe = Probe()
    diagnostics: LinearDiagnostics = LinearDiagnostics()

    rules: ClassVar[tuple[Rule, ...]] = _Run.rules + (
        Rule(
            "optimizer",
            lambda c, _: _mode(c) == "probe" or c.optimizer is not None,
            lambda c, _: f"missing; mode={_mode(c)} trains with it (name, batch_size, lr, weight_decay, ...)",
        ),
        *(
            _unread_by_probe(key, default, why)
            for key, default, why in (
                (
                    "optimizer",
                    None,
                    "not read by mode=probe (its grid is probe.lrs x probe.weight_decays); remove it",
                ),
                ("batchnorm_head", False, "not read by mode=probe (its grid has probe.batchnorm); remove it"),
                ("auto_augment", False, "not read by mode=probe (see probe.train_views); remove it"),
                ("mixup", 0.0, "not read by mode=probe; remove it"),
                ("cutmix", 0.0, "not read by mode=probe; remove it"),
                ("label_smoothing", 0.0, "not read by mode=probe; remove it"),
            )
        ),
        Rule(
            "knn_eval.enabled",
            lambda c, _: _mode(c) != "probe" or not c.knn_eval.enabled,
            "mode=probe trains no backbone to follow; the offline kNN is main_knn.py",
        ),
        Rule(
            "method",
            lambda c, _: c.method == "linear",
            "not a linear-evaluation key; the pretraining method goes in pretrain_method",
        ),
        Rule(
            "finetune",
            lambda c, _: not c.finetune or _mode(c) == "finetune",
            lambda c, _: f"contradicts mode={_mode(c)!r}; drop finetune or set mode=finetune",
        ),
        Rule(
            "partial_blocks",
            lambda c, _: _mode(c) != "partial" or c.partial_blocks is not None,
            lambda c, _: f"mode=partial needs the number of last blocks to train: {_partial_allowed(c)}",
        ),
        Rule(
            "partial_blocks",
            lambda c, _: (
                _mode(c) != "partial"
                or c.partial_blocks == 0.5
                or (
                    isinstance(c.partial_blocks, int)
                    and 1 <= c.partial_blocks <= c.backbone.arguments()["depth"]
                )
            ),
            lambda c, _: f"must be {_partial_allowed(c)}",
        ),
        Rule(
            "partial_blocks",
            lambda c, _: _mode(c) == "partial" or c.partial_blocks is None,
            lambda c, _: f"only used with mode=partial (mode is {_mode(c)!r}); remove it",
        ),
        Rule(
            "optimizer.layer_decay",
            lambda c, _: c.optimizer is None or c.optimizer.layer_decay == 0 or _mode(c) != "linear",
            "only applies when backbone blocks train (mode=partial or finetune); "
            "set it to 0 for a linear probe",
        ),
        Rule(
            "auto_augment",
            lambda c, _: not (c.auto_augment and c.data.format == "dali"),
            "data.format='dali' has no RandAugment/random erasing pipeline; "
            "use data.format=image_folder or auto_augment=False",
        ),
        Rule(
            "knn_eval.bank",
            lambda c, _: not (_mixing(c) and c.knn_eval.enabled and c.knn_eval.bank == "batches"),
            "mixup/cutmix blend the training images and their labels, so they cannot fill a kNN bank; "
            "use knn_eval.bank=clean",
        ),
        Rule(
            "optimizer.batch_size",
            lambda c, _: not _mixing(c) or c.optimizer is None or c.optimizer.batch_size % 2 == 0,
            "mixup/cutmix mix each batch with its reverse and need an even batch size",
        ),
    )

    @model_validator(mode="after")
    def _consistent_mode(self) -> LinearConfig:
        self.mode = _mode(self)
        self.finetune = self.mode == "finetune"
        return self


class OfflineKNN(Declared):
    """The settings of ``main_knn.py`` (its command-line flags, named ``--<field>`` in errors)."""

    k: Annotated[list[PositiveInt], Field(min_length=1)]
    temperature: Annotated[list[Positive], Field(min_length=1)]
    distance_function: Annotated[list[Literal["cosine", "euclidean"]], Field(min_length=1)]
    feature_type: Annotated[list[Feature], Field(min_length=1)]
    batch_size: PositiveInt
    num_workers: NonNegativeInt
    dataset: DatasetName
    data_format: DataFormat
    data_fraction: float

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule("data_fraction", lambda k, _: _fraction_ok(k.data_fraction), _FRACTIONS),
    )

    @classmethod
    def flags(cls) -> dict[str, str]:
        """Each field -> its command-line flag, for error messages."""
        return {name: f"--{name}" for name in cls.model_fields}


# wandb's range distributions, by the scale on which their min/max are written.
LINEAR_RANGES = ("uniform", "q_uniform", "int_uniform")
LOG_VALUE_RANGES = ("log_uniform_values", "q_log_uniform_values")
LOG_EXPONENT_RANGES = ("log_uniform", "q_log_uniform")
Number = Annotated[float, Field(allow_inf_nan=False)] | int
if TYPE_CHECKING:  # the type checker sees a name as a str; pydantic, below, the literal of its choices
    Distribution = str
else:
    Distribution = Literal[LINEAR_RANGES + LOG_VALUE_RANGES + LOG_EXPONENT_RANGES]


class SweepParameter(Declared):
    """One ``parameters.<dotted key>`` of a wandb sweep file: ``value``, ``values`` or a range
    (``min``, ``max``, ``distribution``); the sweep's ``method`` is in the validation context."""

    where: ClassVar[str] = "a sweep parameter"
    # wandb's keys of distributions the dry run tries at min, middle and max only
    ignored: ClassVar[frozenset[str]] = frozenset({"probabilities", "mu", "sigma", "q"})

    value: Any = None
    values: Annotated[list[Any], Field(min_length=1)] | None = None
    min: Number | None = None
    max: Number | None = None
    distribution: Distribution | None = None
    parameters: dict[str, Any] | None = None

    def is_range(self) -> bool:
        return "value" not in self.model_fields_set and self.values is None

    def integer_range(self) -> bool:
        return isinstance(self.min, int) and isinstance(self.max, int)

    def range_distribution(self) -> str:
        return self.distribution or ("int_uniform" if self.integer_range() else "uniform")

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "parameters",
            lambda p, _: p.parameters is None,
            "nested parameters reach ${args_no_hyphens} as one dict; write dotted keys "
            "(method_kwargs.mask_ratio) instead",
        ),
        Rule(
            "values",
            lambda p, ctx: not p.is_range() or ctx.get("method") != "grid",
            "a grid sweep needs values (or value)",
        ),
        Rule(
            "max",
            lambda p, _: not p.is_range() or (p.min is not None and p.max is not None and p.min <= p.max),
            "a range needs numbers min <= max (or give value or values)",
        ),
        Rule(
            "min",
            lambda p, _: not p.is_range() or p.range_distribution() not in LOG_VALUE_RANGES or p.min > 0,
            "a log-uniform range needs min > 0",
        ),
    )


class SweepFile(Declared):
    """The keys of a wandb sweep file the dry run reads; wandb's others are left to wandb."""

    where: ClassVar[str] = "a sweep file"
    ignored: ClassVar[frozenset[str]] = frozenset(
        {"name", "description", "metric", "early_terminate", "run_cap", "project", "entity", "program"}
    )

    method: Literal["grid", "random", "bayes"]
    parameters: Annotated[dict[str, SweepParameter], Field(min_length=1)]
    command: list[Any]

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "command",
            lambda f, _: "${args_no_hyphens}" in f.command,
            "must be a list ending in ${args_no_hyphens} so that the swept values reach Hydra as "
            "key=value overrides",
        ),
    )


__all__ = [
    "DEFAULT_WORKERS",
    "KNN_BANKS",
    "METHOD_KWARGS",
    "NO_VALUE",
    "OPTIMIZER_KWARGS_DEFAULTS",
    "LinearConfig",
    "PretrainConfig",
    "trainer_keys",
]
