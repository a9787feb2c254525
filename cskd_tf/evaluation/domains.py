"""Source domains of a mixed dataset and the domain-level confusion (Figure 4).

A mixed dataset concatenates the classes of several source datasets, e.g.
classes 0-9 from one and 10-19 from another. Grouping the true and the
predicted class by the domain it belongs to shows whether a model's mistakes
stay within a domain (the "hierarchical" confusion of Yun et al., CVPR 2020,
Figure 4).
"""

from __future__ import annotations

import json
import os

import numpy as np

from cskd_tf.errors import ConfigError


def _parse_classes(name: str, value) -> list:
    """Class indices from ``"0-9"``, ``"0-4+7"``, an int, or a list of ints.

    A JSON list is taken as the classes themselves, never as a [first, last]
    range, so ``[0, 9]`` means the two classes 0 and 9.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool)
                                       for v in value):
        return list(value)
    if isinstance(value, str):
        classes = []
        for part in value.replace("+", ",").split(","):
            part = part.strip()
            try:
                if "-" in part:
                    lo, hi = (int(p) for p in part.split("-", 1))
                    if hi < lo:
                        raise ValueError
                    classes += range(lo, hi + 1)
                else:
                    classes.append(int(part))
            except ValueError:
                raise ConfigError(f"domain {name!r}: {part!r} is not a class index or an "
                                  "inclusive range like 0-9") from None
        return classes
    raise ConfigError(f"domain {name!r}: give its classes as \"0-9\" or a list of indices, "
                      f"got {value!r}")


def parse_domains(spec: str) -> list:
    """[(name, sorted class indices)] from a flag value.

    Accepted forms: ``cifar:0-9,digits:10-19`` (inclusive ranges; several
    ranges of one domain joined with ``+``, e.g. ``a:0-4+8-9``); a JSON object
    ``{"cifar": "0-9", "digits": [10, 11, ...]}``; or the path of a file
    holding such JSON. The order given is the order of the matrix rows.
    """
    spec = (spec or "").strip()
    if not spec:
        raise ConfigError("--domains is required for the hierarchy plot, e.g. "
                          "--domains=cifar:0-9,digits:10-19")
    if os.path.isfile(spec):
        with open(spec) as f:
            spec = f.read().strip()
    if spec.startswith("{"):
        try:
            mapping = json.loads(spec)
        except json.JSONDecodeError as error:
            raise ConfigError(f"--domains is not valid JSON ({error})") from None
        items = list(mapping.items())
    else:
        items = []
        for entry in spec.split(","):
            name, sep, classes = entry.partition(":")
            if not sep or not name.strip():
                raise ConfigError(f"--domains entry {entry!r} is not NAME:FIRST-LAST")
            items.append((name.strip(), classes))
    domains = [(name, sorted(set(_parse_classes(name, value)))) for name, value in items]
    if len(domains) < 2:
        raise ConfigError("--domains needs at least two domains")
    seen = {}
    for name, classes in domains:
        if not classes:
            raise ConfigError(f"domain {name!r} has no classes")
        if min(classes) < 0:
            raise ConfigError(f"domain {name!r} has a negative class index")
        for c in classes:
            if c in seen:
                raise ConfigError(f"class {c} is in both domains {seen[c]!r} and {name!r}")
            seen[c] = name
    return [(name, np.asarray(classes, dtype=np.int64)) for name, classes in domains]


def class_to_domain(domains, num_classes: int) -> np.ndarray:
    """(num_classes,) domain index of every class; every class must have one."""
    lookup = np.full(num_classes, -1, dtype=np.int64)
    for d, (name, classes) in enumerate(domains):
        if classes.max() >= num_classes:
            raise ConfigError(f"domain {name!r} names class {int(classes.max())}, but the "
                              f"model has {num_classes} classes")
        lookup[classes] = d
    missing = np.flatnonzero(lookup < 0)
    if missing.size:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if missing.size > 10 else "")
        # An uncovered class could be predicted and would have no column.
        raise ConfigError(f"--domains leaves {missing.size} class(es) without a domain: {shown}")
    return lookup


def domain_confusion(labels, predictions, domains, num_classes: int) -> np.ndarray:
    """(D, D) matrix in percent: row = true domain, column = predicted domain.

    ``M[i, j] = 100 * |{n : dom(y_n) = i, dom(pred_n) = j}| / |{n : dom(y_n) = i}|``;
    each row sums to 100 (a domain with no samples gives a row of NaN).
    """
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    predictions = np.asarray(predictions).reshape(-1).astype(np.int64)
    if labels.shape != predictions.shape:
        raise ValueError(f"labels ({labels.shape[0]}) and predictions "
                         f"({predictions.shape[0]}) differ in length")
    lookup = class_to_domain(domains, num_classes)
    for what, arr in (("labels", labels), ("predictions", predictions)):
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise ValueError(f"{what} out of range for {num_classes} classes")
    d = len(domains)
    counts = np.zeros((d, d), dtype=np.float64)
    np.add.at(counts, (lookup[labels], lookup[predictions]), 1.0)
    totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, 100.0 * counts / totals, np.nan)
