"""Losses and the methods (one small module per method), as Keras-style objects.

``CSKD(temperature=4.0, weight=1.0)`` and one class per method of the paper's tables, with
the paper's hyperparameters as constructor defaults; :data:`METHODS` maps the registry
names (``"cskd"``, the CLI's ``--config.method``) to the classes.
"""

from cskd_tf.losses.kl import class_wise_kl, softened_kl_per_example
from cskd_tf.losses.methods.base import (METHODS, ClassWiseTerm, Method, cross_entropy, get,
                                         get_method, register)

# Importing every module of cskd_tf.losses.methods registers its method.
METHODS.discover()

from cskd_tf.losses.methods.adacos import AdaCos  # noqa: E402
from cskd_tf.losses.methods.byot import BYOT  # noqa: E402
from cskd_tf.losses.methods.ce import CrossEntropy  # noqa: E402
from cskd_tf.losses.methods.cskd import CSKD  # noqa: E402
from cskd_tf.losses.methods.cskd_e import CSKDE  # noqa: E402
from cskd_tf.losses.methods.ddgsd import DDGSD  # noqa: E402
from cskd_tf.losses.methods.kd import KD  # noqa: E402
from cskd_tf.losses.methods.kd_cskd import KDCSKD  # noqa: E402
from cskd_tf.losses.methods.label_smoothing import LabelSmoothing  # noqa: E402
from cskd_tf.losses.methods.max_entropy import MaxEntropy  # noqa: E402
from cskd_tf.losses.methods.mixup import Mixup  # noqa: E402
from cskd_tf.losses.methods.mixup_cskd import MixupCSKD  # noqa: E402
from cskd_tf.losses.methods.virtual_softmax import VirtualSoftmax  # noqa: E402

__all__ = ["BYOT", "CSKD", "CSKDE", "DDGSD", "KD", "KDCSKD", "METHODS", "AdaCos",
           "ClassWiseTerm", "CrossEntropy", "LabelSmoothing", "MaxEntropy", "Method", "Mixup",
           "MixupCSKD", "VirtualSoftmax", "class_wise_kl", "cross_entropy", "get", "get_method",
           "register", "softened_kl_per_example"]
