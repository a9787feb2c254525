"""The paper's training recipes per dataset, from which configs/*.py are made.

Yun et al. (CVPR 2020), Section 4.1: SGD with momentum 0.9, weight decay
1e-4, initial learning rate 0.1 divided by 10 twice over 200 epochs; batch 128 on
CIFAR-100 / TinyImageNet (PreAct ResNet-18, 32 px) and 32 on the fine-grained sets
(ImageNet-style ResNet-18, 224 px); T = 4, λ = 1 on the coarse datasets and λ = 3 on
the fine-grained ones. ImageNet (Table 5): 90 epochs, batch 256, lr ÷10 at epochs 30
and 60.

Every number below names the line of the reference code (github.com/alinlab/cs-kd,
commit b447f25) it comes from: ``train.py:NN`` (argparse defaults and the training loop),
``datasets.py:NN`` (transforms and normalisation), ``README.md:NN`` (the command lines
the authors give, which set what the defaults do not). The schedule: the reference lowers
the rate *after* an epoch (train.py:216-231), so the first epochs at 0.01 and 0.001 are
101 and 151 of 200 (:func:`reference_decay_epochs`; 101 epochs at 0.1, 50 at 0.01, 49
at 0.001).

The networks are the reference code's (github.com/alinlab/cs-kd): at 32 px its
``CIFAR_ResNet`` (``cskd_preact_resnet18`` / ``cskd_preact_resnet10``, layer for
layer) and ``CIFAR_DenseNet121`` (``densenet121_cifar``), started from the
weights PyTorch would draw (``init="torch"``, see :mod:`cskd_tf.models.init`).

Every recipe runs under ``config.protocol = "paper"``: the whole official training split,
the final model reported on the test split (TinyImageNet's and ImageNet's official val
split), and per-epoch test metrics in history.csv so that the reference code's
best-test-epoch number can be reproduced (``cskd-report --selection=best_test_epoch``).
Pass ``protocol="tune"`` (or --config.protocol=tune) to hold a val split out instead.
"""

from __future__ import annotations

import math

from cskd_tf.config import default_config


def reference_decay_epochs(num_epochs):
    """``config.lr_decay_epochs`` (the first 0-based epoch at each lower rate) reproducing the
    reference code's per-epoch lr over ``num_epochs`` = E epochs: (⌈E/2⌉ + 1, ⌈3E/4⌉ + 1).

    Its ``adjust_learning_rate(epoch)`` sets base·0.1^([epoch ≥ E/2] + [epoch ≥ 3E/4])
    (train.py:216-222) and is called after epoch ``epoch`` is trained and evaluated
    (train.py:228-231), so the rate it sets is first used in epoch ``epoch + 1``; the first
    epoch of the run trains at the base rate (train.py:72).
    """
    num_epochs = int(num_epochs)
    return tuple(math.ceil(fraction * num_epochs) + 1 for fraction in (0.5, 0.75))


# The reference's own CIFAR normalisation (datasets.py:224-225, 229), used for CIFAR-10 and
# CIFAR-100 alike; TinyImageNet and the 224 px sets use ImageNet's (datasets.py:166, 204),
# which their sources already give.
REFERENCE_CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
REFERENCE_CIFAR_STD = (0.2023, 0.1994, 0.2010)

# Shared by every recipe (default_config() holds the same values; restated so each number
# names its reference line): lr train.py:21, SGD momentum 0.9 train.py:72, weight decay
# 1e-4 train.py:27, epochs 200 train.py:26 (README.md:13, 17), decay epochs (101, 151)
# train.py:216-231, T = 4 train.py:34, the CS-KD loss with the pair batch sampler
# train.py:33 (-cls) and datasets.py:248.
_REFERENCE = dict(learning_rate=0.1, momentum=0.9, weight_decay=1e-4, num_epochs=200,
                  lr_decay_epochs=reference_decay_epochs(200), temperature=4.0)

# dataset key -> the recipe's fields (set over default_config()).
PAPER_DATASETS = {
    # model CIFAR_ResNet18 train.py:23; batch 128 train.py:25; λ = 1 train.py:35 and
    # README.md:13; augment "cifar" = RandomCrop(32, padding=4) + flip datasets.py:221-222,
    # eval unchanged 32 px datasets.py:227-230; normalisation datasets.py:224-225, 229.
    "cifar100": dict(_REFERENCE, dataset="tfds:cifar100", model="cskd_preact_resnet18",
                     augment="cifar", image_size=32, batch_size=128, lambda_cls=1.0,
                     input_mean=REFERENCE_CIFAR_MEAN, input_std=REFERENCE_CIFAR_STD),
    # model CIFAR_ResNet18 train.py:23; batch 128 train.py:25; λ = 1 train.py:35; augment
    # "tinyimagenet" = RandomResizedCrop(32) + flip datasets.py:163-164, eval Resize(32)
    # datasets.py:169;
    # ImageNet normalisation datasets.py:166, 171 (the tinyimagenet source's statistics).
    "tinyimagenet": dict(_REFERENCE, dataset="tinyimagenet", model="cskd_preact_resnet18",
                         augment="tinyimagenet", image_size=32, batch_size=128, lambda_cls=1.0),
    # Fine-grained (CUB200, STANFORD120, MIT67 share datasets.py:199-210): model resnet18,
    # batch 32 and λ = 3 README.md:17; augment "finegrained" = RandomResizedCrop(224) + flip
    # datasets.py:201-202, eval Resize(256) + CenterCrop(224) datasets.py:207-208;
    # ImageNet normalisation datasets.py:204, 210 (the sources' statistics).
    "cub200": dict(_REFERENCE, dataset="tfds:caltech_birds2011", model="resnet18",
                   augment="finegrained", image_size=224, batch_size=32, lambda_cls=3.0),
    "dogs": dict(_REFERENCE, dataset="tfds:stanford_dogs", model="resnet18",
                 augment="finegrained", image_size=224, batch_size=32, lambda_cls=3.0),
    "mit67": dict(_REFERENCE, dataset="mit67", model="resnet18", augment="finegrained",
                  image_size=224, batch_size=32, lambda_cls=3.0),
    # ImageNet: the transforms are the reference's (datasets.py:180-191, the same as the
    # fine-grained ones), but the reference gives no ImageNet command: 90 epochs, batch 256,
    # decay at epochs 30 and 60 and λ = 1 are the paper's ImageNet text (Table 5)
    # (train.py's rule with --epoch 90 would decay after epochs 45 and 68 instead).
    "imagenet": dict(_REFERENCE, dataset="tfds:imagenet2012", model="resnet50",
                     augment="finegrained", image_size=224, batch_size=256, lambda_cls=1.0,
                     num_epochs=90, lr_decay_epochs=(30, 60), pair_mode="stream"),
}


def paper_config(dataset_key, **overrides):
    """default_config() with the paper's recipe for ``dataset_key`` and overrides; a method
    group given as a dict (``kd=dict(alpha=0.5)``) sets only the fields it names."""
    config = default_config()
    config.protocol = "paper"
    config.init = "torch"
    # The paper's numbers are float32 ones. On the reference-network protocol bf16 raised
    # CE's ECE by 1.6 ± 2.0 points over five paired seeds (4 of 5 up; CS-KD's ECE did not
    # move: benchmarks/README.md 3.6), which would tilt a calibration comparison toward
    # CS-KD; so the recipes stay float32 where the library default "auto" would pick
    # bf16. --config.mixed_precision=auto opts in.
    config.mixed_precision = "float32"
    config.update(PAPER_DATASETS[dataset_key])
    config.update(overrides)
    return config


# ----------------------------------------------------------------------------- paper tables
#
# One config per cell of the paper's comparison tables, generated from PAPER_DATASETS:
# a cell is "TABLE:DATASET:MODEL:METHOD", MODEL a registry name. configs/paper.py exposes
# paper_cell_config() to cskd-train (--config=configs/paper.py:CELL).

# Architecture rows of Tables 1-4 -> registry name for (32 px CIFAR-style, 224 px) datasets.
ARCHITECTURES = {
    "resnet18": ("cskd_preact_resnet18", "resnet18"),
    "densenet121": ("densenet121_cifar", "densenet121"),
    "resnet10": ("cskd_preact_resnet10", "resnet10"),
}
SMALL_DATASETS = ("cifar100", "tinyimagenet", "cub200", "dogs", "mit67")
_CIFAR_STYLE = ("cifar100", "tinyimagenet")

# table -> (datasets, architecture rows, methods, KD teacher (architecture, method) or None).
# Table 5's architectures are registry names already (ImageNet only).
PAPER_TABLES = {
    # Output regularizers vs CS-KD, ResNet-18 and DenseNet-121.
    "table1": (SMALL_DATASETS, ("resnet18", "densenet121"),
               ("ce", "adacos", "virtual_softmax", "max_entropy", "label_smoothing", "cskd"), None),
    # Self-distillation methods, ResNet-18.
    "table2": (SMALL_DATASETS, ("resnet18",), ("ce", "ddgsd", "byot", "cskd", "cskd_e"), None),
    # Combination with Mixup, ResNet-18.
    "table3": (SMALL_DATASETS, ("resnet18",), ("ce", "cskd", "mixup", "mixup_cskd"), None),
    # Combination with KD: ResNet-10 students of a DenseNet-121 teacher trained with CS-KD.
    "table4": (SMALL_DATASETS, ("resnet10",), ("ce", "cskd", "kd", "kd_cskd"),
               ("densenet121", "cskd")),
    # ImageNet, 90 epochs, batch 256.
    "table5": (("imagenet",), ("resnet50", "resnet101", "resnext101_32x4d"), ("ce", "cskd"), None),
}
KD_METHODS = ("kd", "kd_cskd")
PAPER_WORKDIR_ROOT = "runs/paper"


def _model_name(architecture, dataset):
    if architecture not in ARCHITECTURES:
        return architecture
    cifar, imagenet = ARCHITECTURES[architecture]
    return cifar if dataset in _CIFAR_STYLE else imagenet


def teacher_cell(table, dataset):
    """The cell that trains ``table``'s KD teacher on ``dataset``, or None."""
    teacher = PAPER_TABLES[table][3]
    if teacher is None:
        return None
    architecture, method = teacher
    return f"{table}:{dataset}:{_model_name(architecture, dataset)}:{method}"


def paper_cells(table=None):
    """Every valid cell id ("TABLE:DATASET:MODEL:METHOD"), in table order.

    Table 4 also lists its teacher cells (DenseNet-121 trained with CS-KD), which its KD
    students read from :func:`paper_workdir` of the teacher cell.
    """
    cells = []
    for name, (datasets, architectures, methods, _) in PAPER_TABLES.items():
        if table is not None and name != table:
            continue
        for dataset in datasets:
            if teacher_cell(name, dataset):
                cells.append(teacher_cell(name, dataset))
            for architecture in architectures:
                model = _model_name(architecture, dataset)
                cells.extend(f"{name}:{dataset}:{model}:{method}" for method in methods)
    return cells


def paper_workdir(cell):
    """The conventional workdir of a cell: runs/paper/TABLE/DATASET/MODEL/METHOD."""
    return "/".join([PAPER_WORKDIR_ROOT, *cell.split(":")])


def paper_cell_config(cell):
    """The config of one table cell (see :func:`paper_cells`); ConfigError if unknown."""
    import difflib

    from cskd_tf.errors import ConfigError

    valid = paper_cells()
    if cell not in valid:
        close = difflib.get_close_matches(str(cell), valid, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown paper cell {cell!r}{hint}; a cell is "
                          f"TABLE:DATASET:MODEL:METHOD with TABLE in {', '.join(PAPER_TABLES)}; "
                          "list them with python -c 'from cskd_tf.recipes import paper_cells; "
                          "print(*paper_cells(), sep=chr(10))'")
    table, dataset, model, method = cell.split(":")
    overrides = dict(model=model, method=method)
    if method in KD_METHODS:
        overrides["kd"] = dict(teacher_workdir=paper_workdir(teacher_cell(table, dataset)))
    return paper_config(dataset, **overrides)
