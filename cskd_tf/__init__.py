"""cskd_tf: class-wise self-knowledge distillation (Yun et al., CVPR 2020) in Keras 3."""

__version__ = "0.1.0"
