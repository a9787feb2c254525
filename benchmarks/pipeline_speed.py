"""Pairs per second out of the CS-KD training pipeline (decode + augmentation + batching).

    python benchmarks/pipeline_speed.py --data_dir /tmp/tiny-imagenet-200-lowshot
    python benchmarks/pipeline_speed.py                       # digits, no data needed

With --data_dir (an unpacked TinyImageNet tree) it measures JPEG decode + augmentation at
32 px; without, sklearn's digits. The shard cache is built first (not timed) in
--cache_dir (default: a temporary folder). The first --warmup batches are not timed.
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from cskd_tf.config import default_config
from cskd_tf.data import prepare, train_dataset


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data_dir", default="", help="TinyImageNet folder; empty = digits")
    p.add_argument("--cache_dir", default="")
    p.add_argument("--modes", default="memory,stream")
    p.add_argument("--augments", default="", help="comma list; default: the dataset's own")
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--batches", type=int, default=300)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--shuffle_buffer", type=int, default=5000, help="stream mode")
    args = p.parse_args()

    config = default_config()
    if args.data_dir:
        config.dataset, config.data_dir = "tinyimagenet", args.data_dir
    scratch = None if args.cache_dir else tempfile.TemporaryDirectory(prefix="cskd-bench-")
    config.cache_dir = args.cache_dir or scratch.name
    config.batch_size = args.batch_size
    config.shuffle_buffer = args.shuffle_buffer
    config.num_epochs = 1000  # never the limit: the stream is cut after --batches
    t = time.perf_counter()
    info, splits = prepare(config)
    elapsed = time.perf_counter() - t
    print(f"dataset {config.dataset}: {info.splits}, cache ready in {elapsed:.1f} s "
          f"({info.cache_path})")
    for augment in (args.augments.split(",") if args.augments else [info.augment]):
        info.augment = augment
        for mode in args.modes.split(","):
            config.pair_mode = mode
            ds, steps = train_dataset(config, info, splits["train"])
            it = iter(ds)
            for _ in range(args.warmup):
                next(it)
            t = time.perf_counter()
            for _ in range(args.batches):
                (x, _), _ = next(it)
            seconds = time.perf_counter() - t
            rate = args.batches * args.batch_size / seconds
            print(f"{mode:6s} augment={augment:13s} image {tuple(x.shape[1:])}: "
                  f"{rate:8.0f} pairs/s ({2 * rate:.0f} images/s) over {args.batches} batches "
                  f"of {args.batch_size}")


if __name__ == "__main__":
    main()
