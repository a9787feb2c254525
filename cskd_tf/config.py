"""The configuration schema shared by every experiment.

Each file in ``configs/`` starts from :func:`default_config` and changes only
the fields it needs, so the set of field names is fixed here. A field that is
not declared here is a typo, and :func:`validate` says so instead of silently
training with the default.
"""

from __future__ import annotations

import difflib
import json

import ml_collections

from cskd_tf.errors import ConfigError

# Values of config fields that choose from a fixed set.
CHOICES = {
    "optimizer": ("sgd",),
    "init": ("he_normal", "torch"),
    "lr_schedule": ("step", "cosine", "constant"),
    "mixed_precision": ("", "mixed_float16", "mixed_bfloat16"),
    "jit_compile": ("auto", "on", "off"),
    "pair_mode": ("memory", "stream"),
    "distribution": ("auto", "one_device", "mirrored", "multi_worker", "tpu"),
    "protocol": ("paper", "tune"),
}


def default_config() -> ml_collections.ConfigDict:
    """Every field an experiment may set, with the paper's defaults."""
    c = ml_collections.ConfigDict()

    # What to train.
    c.method = "cskd"  # a name in cskd_tf.losses.METHODS
    c.model = "preact_resnet18"  # a name in cskd_tf.models registry
    c.model_width = 0  # base width of the backbone; 0 = the architecture's own
    c.init = "he_normal"  # initial weights: he_normal | torch (PyTorch defaults, as the paper's code)
    c.lambda_cls = 1.0  # λ, weight of the class-wise KL term (3.0 for fine-grained)
    c.lambda_warmup_epochs = 0  # λ rises linearly from 0 over this many epochs
    c.temperature = 4.0  # T of the softened predictions

    # Method-specific knobs (used only by the methods that read them).
    c.label_smoothing = 0.1
    c.max_entropy_beta = 0.1
    c.mixup_alpha = 1.0
    c.kd_temperature = 4.0
    c.kd_alpha = 0.9  # KD: weight of the distillation term
    c.teacher_workdir = ""  # KD teacher: a cskd-train workdir or a SavedModel path
    c.teacher_model = ""  # KD teacher architecture, if it differs from what the workdir says
    # BYOT T, α, λ: the reference code's defaults (the paper gives none), see losses/methods/byot.py.
    c.byot_temperature = 3.0
    c.byot_alpha = 0.1
    c.byot_beta = 1e-6  # λ of the summed feature hint
    c.ddgsd_mmd_weight = 0.0005
    c.ddgsd_temperature = 3.0  # T of DDGSD's KL terms, see losses/methods/ddgsd.py
    c.lambda_sample = 1.0  # CS-KD-E: weight of the sample-wise term

    # Data.
    c.dataset = "digits"  # digits | tinyimagenet | imagefolder | mit67 | fashion_mnist | tfds:<name>
    c.data_dir = ""
    c.cache_dir = ""  # per-class TFRecord shard cache; "" = $CSKD_CACHE_DIR or ~/.cache/cskd_tf
    c.image_size = 0  # model input size in px; 0 = the dataset's default
    c.augment = "auto"  # auto | none | cifar | tinyimagenet | finegrained | digits
    c.val_fraction = 0.1  # held out of train when the source has no validation split
    # tune: val (the source's, else held out of train) for model selection and the tuner;
    # paper: the official train split, no val, per-epoch test metrics (cskd_tf/data/pipeline.py).
    c.protocol = "tune"
    c.max_classes = 0  # keep only the first N classes (0 = all): budgeted protocols
    c.max_train_per_class = 0  # cap training examples per class (0 = all)
    c.pair_mode = "memory"  # memory: exact sampler over cached shards; stream: interleave shards
    c.shuffle_buffer = 0  # stream mode only; 0 = one epoch

    # Optimisation (the paper's recipe).
    c.optimizer = "sgd"
    c.learning_rate = 0.1
    c.momentum = 0.9
    c.nesterov = False
    c.weight_decay = 1e-4
    c.batch_size = 128
    c.eval_batch_size = 256
    c.num_epochs = 200
    c.lr_schedule = "step"
    c.lr_decay_epochs = (100, 150)
    c.lr_decay_factor = 0.1
    c.warmup_epochs = 0
    c.steps_per_epoch = 0  # 0 = one pass over the training split

    # Execution.
    c.seed = 0
    c.jit_compile = "auto"  # auto = on where a GPU is present
    c.mixed_precision = ""
    c.deterministic = False  # tf.config.experimental.enable_op_determinism
    c.distribution = "auto"
    c.steps_per_execution = 1
    c.verbose = 1
    c.eval_splits = ("val", "test")  # evaluated at the end when the dataset has them
    c.checkpoint_every_epochs = 1

    # Keras Tuner search space (read by cskd-tune; see docs/tuning.md). Every entry may be
    # () = not searched: the trial uses the plain field above (config.lambda_cls, ...).
    c.search = ml_collections.ConfigDict()
    c.search.lambda_cls = (0.25, 8.0)  # (min, max), sampled log-uniformly; min > 0
    c.search.temperature = (1.0, 2.0, 4.0, 8.0)  # choices
    c.search.learning_rate = ()  # () = fixed; (min, max) = log-uniform
    c.search.weight_decay = ()
    return c


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Checks field names and values; raises ConfigError with a one-line fix."""
    reference = default_config()
    _check_keys(config, reference, prefix="")
    for field, allowed in CHOICES.items():
        value = config.get(field)
        if value not in allowed:
            raise ConfigError(
                f"config.{field}={value!r} is not one of {', '.join(map(repr, allowed))}; "
                f"set --config.{field} to one of them")
    positive = ("batch_size", "eval_batch_size", "num_epochs", "temperature", "learning_rate")
    for field in positive:
        if not config[field] > 0:
            raise ConfigError(f"config.{field} must be > 0 (got {config[field]!r})")
    if config.lambda_cls < 0:
        raise ConfigError(f"config.lambda_cls must be >= 0 (got {config.lambda_cls!r})")
    if not 0 <= config.val_fraction < 1:
        raise ConfigError(f"config.val_fraction must be in [0, 1) (got {config.val_fraction!r})")
    check_search(config.search)
    return config


# config.search entries that are (min, max) ranges sampled log-uniformly, and the choice lists.
SEARCH_RANGES = ("lambda_cls", "learning_rate", "weight_decay")
SEARCH_CHOICES = ("temperature",)


def check_search(search):
    """The shape of config.search; whether it leaves anything to tune is cskd-tune's check."""
    def numbers(value):
        return isinstance(value, (tuple, list)) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)

    for field in SEARCH_RANGES:
        value = search[field]
        if not numbers(value) or len(value) not in (0, 2):
            raise ConfigError(f"config.search.{field}={value!r} must be () (not searched) or "
                              f"(min, max)")
        if not value:
            continue
        low, high = value
        if low > high:
            raise ConfigError(f"config.search.{field}=({low!r}, {high!r}) has min > max; "
                              f"write it as ({high!r}, {low!r})")
        # Log-uniform sampling needs a positive lower end.
        if low <= 0:
            raise ConfigError(f"config.search.{field}=({low!r}, {high!r}) must have min > 0 "
                              "(the range is sampled log-uniformly)")
    for field in SEARCH_CHOICES:
        value = search[field]
        if not numbers(value):
            raise ConfigError(f"config.search.{field}={value!r} must be a tuple of numbers "
                              f"(the choices), or () to keep config.{field}")
        if any(v <= 0 for v in value):
            raise ConfigError(f"config.search.{field}={tuple(value)!r}: every choice must be > 0")
        if len(set(value)) != len(value):
            raise ConfigError(f"config.search.{field}={tuple(value)!r} lists a choice twice")


def _check_keys(config, reference, prefix):
    for key in config.keys():
        if key not in reference:
            close = difflib.get_close_matches(key, list(reference.keys()), n=1)
            hint = f"; did you mean {prefix}{close[0]}?" if close else ""
            raise ConfigError(f"unknown config field '{prefix}{key}'{hint} "
                              f"(see cskd_tf/config.py for the fields)")
        if isinstance(reference[key], ml_collections.ConfigDict):
            if not isinstance(config[key], ml_collections.ConfigDict):
                raise ConfigError(f"config field '{prefix}{key}' must be a group of fields")
            _check_keys(config[key], reference[key], prefix=f"{prefix}{key}.")


def to_json(config: ml_collections.ConfigDict) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=list)


def from_json(text: str) -> ml_collections.ConfigDict:
    config = default_config()
    config.update(_tuples(json.loads(text)))
    return config


def _tuples(value):
    """JSON turns tuples into lists; the schema uses tuples."""
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value
