"""cskd_tf: class-wise self-knowledge distillation (CS-KD) for Keras 3 / TensorFlow."""

from setuptools import find_packages, setup

CONSOLE_SCRIPTS = [
    "cskd-train = cskd_tf.cli.train:run",
    "cskd-eval = cskd_tf.cli.eval:run",
    "cskd-report = cskd_tf.cli.report:run",
    "cskd-plot = cskd_tf.cli.plot:run",
    "cskd-build-cache = cskd_tf.cli.build_cache:run",
    "cskd-export = cskd_tf.cli.export:run",
    "cskd-predict = cskd_tf.cli.predict:run",
    "cskd-tune = cskd_tf.cli.tune:run",
]

setup(
    name="cskd_tf",
    version="0.1.0",
    description="Class-wise self-knowledge distillation (Yun et al., CVPR 2020) in Keras 3",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["cskd_tf", "cskd_tf.*"]),
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.21,<2.22",
        # cskd_tf/compat.py reaches into these two libraries' private modules; it is
        # tested (tests/test_compat.py) against these minor versions only.
        "keras>=3.15.1,<3.16",
        "tensorflow-datasets>=4.9,<5",
        "keras-tuner>=1.4.8,<1.5",
        # models.config is read and written with TF Serving's own protos.
        "tensorflow-serving-api>=2.21,<2.22",
        "absl-py>=2.0,<3",
        "ml-collections>=1.0,<2",
        "scikit-learn>=1.3,<2",
        "matplotlib>=3.7,<4",
        "pillow>=10",
        "numpy>=1.26,<3",
        # TF 2.21 and keras-tuner import these but do not install them.
        "tensorboard>=2.21,<2.22",
        "importlib_resources>=6",
    ],
    extras_require={
        "test": ["pytest>=8"],
        # Empty: tensorflow-serving-api is a core dependency now; kept so that
        # `pip install cskd_tf[serving]` still works.
        "serving": [],
    },
    entry_points={"console_scripts": CONSOLE_SCRIPTS},
)
