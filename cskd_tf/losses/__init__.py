"""Losses and the method registry (one small module per method)."""

import importlib
import pkgutil

from cskd_tf.losses.kl import class_wise_kl, softened_kl_per_example
from cskd_tf.losses.methods.base import METHODS, Method, cross_entropy, get_method, register

# Importing each module of cskd_tf.losses.methods registers its method.
for _info in pkgutil.iter_modules(importlib.import_module("cskd_tf.losses.methods").__path__):
    importlib.import_module(f"cskd_tf.losses.methods.{_info.name}")

__all__ = ["METHODS", "Method", "class_wise_kl", "cross_entropy", "get_method", "register",
           "softened_kl_per_example"]
