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
from cskd_tf.registry import METHODS

# Values of config fields that choose from a fixed set.
CHOICES = {
    "init": ("he_normal", "torch"),
    "lr_schedule": ("step", "cosine", "constant"),
    # "" = float32, the name of the default in configs and workdirs written before "float32".
    "mixed_precision": ("float32", "auto", "mixed_bfloat16", "mixed_float16", ""),
    "jit_compile": ("auto", "on", "off"),
    "pair_mode": ("memory", "stream"),
    "distribution": ("auto", "one_device", "mirrored", "multi_worker", "tpu"),
    "protocol": ("paper", "tune"),
}

def group(**fields) -> ml_collections.ConfigDict:
    """A nested group of config fields (``config.kd.temperature``, ...)."""
    return ml_collections.ConfigDict(fields)


def method_groups() -> dict:
    """{method name: {field: default}} of every method that declares a config group.

    Read from the method registry: the declarations in cskd_tf/losses/methods/ (parsed,
    not imported, so the config needs no TensorFlow) and any method registered at run
    time by a module outside that package.
    """
    return {e.name: dict(e.defaults) for e in METHODS.entries(declared=True) if e.defaults}


def _unset_float():
    """A float field whose default is None (unset); plain None could not be set from the CLI."""
    return ml_collections.FieldReference(None, field_type=float)


def default_config() -> ml_collections.ConfigDict:
    """Every field an experiment may set, with the paper's defaults."""
    c = ml_collections.ConfigDict()

    # What to train.
    c.method = "cskd"  # a name in cskd_tf.registry.METHODS (cskd_tf/losses/methods/)
    c.model = "preact_resnet18"  # a name in cskd_tf.registry.MODELS (cskd_tf/models/)
    c.model_width = 0  # base width of the backbone; 0 = the architecture's own
    # Initial weights: he_normal | torch (PyTorch's defaults, as the paper's code draws them).
    c.init = "he_normal"
    c.lambda_cls = 1.0  # λ, weight of the class-wise KL term (3.0 for fine-grained)
    c.lambda_warmup_epochs = 0  # λ rises linearly from 0 over this many epochs
    c.temperature = 4.0  # T of the softened predictions

    # Method hyperparameters: one group per method that declares one, named after it, read
    # only by that method (and by the combinations that include it) through
    # Method.from_experiment_config. Each method declares its group in its @register(...)
    # (cskd_tf/losses/methods/); the group's defaults are its constructor's, the paper's.
    # CS-KD's own λ and T above stay top-level: the headline knobs, searched by cskd-tune.
    for name, defaults in method_groups().items():
        # A None default is an unset float (byot's α and β: the variant's own values).
        c[name] = group(**{k: _unset_float() if v is None else v for k, v in defaults.items()})

    # Data.
    c.dataset = "digits"  # a name in cskd_tf.registry.SOURCES (cskd_tf/data/sources/)
    c.data_dir = ""
    c.cache_dir = ""  # per-class TFRecord shard cache; "" = $CSKD_CACHE_DIR or ~/.cache/cskd_tf
    c.image_size = 0  # model input size in px; 0 = the dataset's default
    c.augment = "auto"  # auto (the dataset's) | a name in cskd_tf.data.augment.AUGMENTS
    # Per-channel mean/std (of [0, 1] pixels) the model normalises its input with; () = the
    # source's published statistics, else the training split's. The CIFAR-100 recipe sets
    # the reference code's constants (cskd_tf/recipes.py).
    c.input_mean = ()
    c.input_std = ()
    c.val_fraction = 0.1  # held out of train when the source has no validation split
    # tune: val (the source's, else held out of train) for model selection and the tuner;
    # paper: the official train split, no val, per-epoch test metrics (cskd_tf/data/pipeline.py).
    c.protocol = "tune"
    c.max_classes = 0  # keep only the first N classes (0 = all): budgeted protocols
    c.max_train_per_class = 0  # cap training examples per class (0 = all)
    c.pair_mode = "memory"  # memory: exact sampler over cached shards; stream: interleave shards
    c.shuffle_buffer = 0  # stream mode only; 0 = one epoch

    # Optimisation (the paper's recipe; SGD with momentum is the only optimizer).
    c.learning_rate = 0.1
    c.momentum = 0.9
    c.nesterov = False
    c.weight_decay = 1e-4
    c.batch_size = 128
    c.eval_batch_size = 256
    c.num_epochs = 200
    c.lr_schedule = "step"
    # First (0-based) epochs at lr/10 and lr/100: the reference code lowers the rate *after*
    # epochs 100 and 150 of 200 (cskd_tf/recipes.py: reference_decay_epochs).
    c.lr_decay_epochs = (101, 151)
    c.lr_decay_factor = 0.1
    c.warmup_epochs = 0
    c.steps_per_epoch = 0  # 0 = one pass over the training split

    # Execution.
    c.seed = 0
    c.jit_compile = "auto"  # auto = on where a GPU is present
    # Keras dtype policy. auto = mixed_bfloat16 on a CPU that computes bfloat16 natively
    # and has no GPU, else float32 ($CSKD_PRECISION overrides it; cskd_tf/runtime.py).
    # auto is the default because on the reference-network protocol bf16's paired
    # (same-seed) top-1 and ECE differences from float32 were within seed noise for CE and
    # CS-KD and CS-KD's gain over CE held (benchmarks/README.md, section 3.6), at 1.6-3x
    # the speed. The paper recipes (cskd_tf/recipes.py) set float32. The policy a run used
    # is recorded in DIR/data.json ("runtime": {"precision"}).
    c.mixed_precision = "auto"
    c.deterministic = False  # tf.config.experimental.enable_op_determinism
    c.distribution = "auto"
    c.steps_per_execution = 1
    # Batch norm with global-batch statistics under a multi-replica strategy (else each
    # replica normalizes its own slice); see cskd_tf/training/distribute.py.
    c.sync_batch_norm = False
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
    """Checks field names and values; raises ConfigError with a one-line fix (ModelError
    for an unknown ``config.method``: the method registry's own error)."""
    reference = default_config()
    _check_keys(config, reference, prefix="")
    # The registered and declared methods: known before the method modules (and TensorFlow)
    # are imported, so the CLI rejects a misspelt --config.method at once.
    METHODS.check(config.method, declared=True)
    for field, allowed in CHOICES.items():
        value = config.get(field)
        if value not in allowed:
            raise ConfigError(
                f"config.{field}={value!r} is not one of {', '.join(map(repr, allowed))}; "
                f"set --config.{field} to one of them")
    for field in ("batch_size", "eval_batch_size", "num_epochs", "temperature", "learning_rate"):
        check_range(field, config[field], low=0, low_open=True)
    check_range("lambda_cls", config.lambda_cls, low=0)
    for field in ("weight_decay", "lambda_warmup_epochs"):
        check_range(field, config[field], low=0)
    check_range("momentum", config.momentum, low=0, high=1, high_open=True)
    check_range("lr_decay_factor", config.lr_decay_factor, low=0, low_open=True)
    for field in ("steps_per_execution", "checkpoint_every_epochs"):
        check_range(field, config[field], low=1)
    check_range("val_fraction", config.val_fraction, low=0, high=1, high_open=True)
    _check_decay_epochs(config.lr_decay_epochs)
    _check_eval_splits(config.eval_splits)
    check_search(config.search)
    return config


def _check_decay_epochs(value):
    """config.lr_decay_epochs: a tuple of whole epochs >= 0 (the schedule counts those passed)."""
    whole = isinstance(value, (tuple, list)) and all(
        isinstance(e, int) and not isinstance(e, bool) and e >= 0 for e in value)
    if not whole:
        raise ConfigError(f"config.lr_decay_epochs={value!r} must be a tuple of whole epochs "
                          ">= 0; set it like --config.lr_decay_epochs='(100, 150)', or () for "
                          "no decay")


# The splits a dataset may have (cskd_tf/data/pipeline.py); which it has is known only later.
SPLITS = ("train", "val", "test")


def _check_eval_splits(value):
    """config.eval_splits: names of splits, so a typo does not leave metrics.json empty."""
    if not isinstance(value, (tuple, list)) or any(name not in SPLITS for name in value):
        raise ConfigError(f"config.eval_splits={value!r} must be a tuple of split names "
                          f"from {', '.join(map(repr, SPLITS))}; set it like "
                          "--config.eval_splits='(\"val\", \"test\")'")


def check_range(field, value, low=None, high=None, low_open=False, high_open=False, default=None):
    """``float(value)`` if it lies between ``low`` and ``high``, else ConfigError.

    ``low``/``high`` None = unbounded on that side; ``*_open`` excludes the bound itself.
    ``field`` is the dotted path under ``config`` (``"kd.alpha"``); the message names it, the
    allowed range and, if given, the default, e.g. ``config.kd.alpha must be in [0, 1] (got
    1.5); set --config.kd.alpha to a value in [0, 1]``. Used by validate and by every method's
    constructor, so a method built directly from keywords is checked the same way.
    """
    if low is not None and high is not None:
        allowed = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        allowed = f"{'>' if low_open else '>='} {low:g}"
    elif high is not None:
        allowed = f"{'<' if high_open else '<='} {high:g}"
    else:
        allowed = "a number"
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = None
    inside = (number is not None and number == number  # NaN is in no range
              and (low is None or (number > low if low_open else number >= low))
              and (high is None or (number < high if high_open else number <= high)))
    if not inside:
        hint = f" (the default is {default:g})" if default is not None else ""
        raise ConfigError(f"config.{field} must be {allowed} (got {value!r}); "
                          f"set --config.{field} to a value {allowed}{hint}")
    return number


def check_choice(field, value, allowed):
    """``value`` if it is one of ``allowed``, else a one-line ConfigError naming them."""
    if value not in allowed:
        raise ConfigError(f"config.{field}={value!r} is not one of "
                          f"{', '.join(map(repr, allowed))}; set --config.{field} to one of them")
    return value


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
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
            raise ConfigError(f"unknown config field '{prefix}{key}'{hint} "
                              f"(see cskd_tf/config.py for the fields)")
        if isinstance(reference[key], ml_collections.ConfigDict):
            if not isinstance(config[key], ml_collections.ConfigDict):
                raise ConfigError(f"config field '{prefix}{key}' must be a group of fields")
            _check_keys(config[key], reference[key], prefix=f"{prefix}{key}.")


def fixed_precision(setting: str) -> str | None:
    """The Keras policy a ``config.mixed_precision`` value names by itself.

    ``""`` (the old name of the float32 default) is float32; ``auto`` is None, decided on
    the machine that runs (:func:`cskd_tf.runtime.resolve_precision`).
    """
    if setting == "auto":
        return None
    return setting or "float32"


def to_json(config: ml_collections.ConfigDict) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=list)


def from_json(text: str) -> ml_collections.ConfigDict:
    """The config a ``to_json`` text describes.

    A text without ``mixed_precision`` predates the field, when float32 was the only
    precision: it reads as ``""`` (float32), whatever today's default is. ValueError for
    a text that is not a JSON object; ConfigDict's TypeError for a value of the wrong type.
    """
    fields = _tuples(json.loads(text))
    if not isinstance(fields, dict):
        raise ValueError(f"a config is a JSON object of fields, not a {type(fields).__name__}")
    fields.setdefault("mixed_precision", "")
    config = default_config()
    config.update(fields)
    return config


def _tuples(value):
    """JSON turns tuples into lists; the schema uses tuples."""
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value
