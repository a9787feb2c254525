"""Speed benchmark (same as the `cskd-speed` console script); see cskd_tf/cli/speed.py.

    python benchmarks/speed.py --data_dir=/tmp/tiny-imagenet-200-lowshot --output=speed.json
"""

from cskd_tf.cli.speed import run

if __name__ == "__main__":
    run()
