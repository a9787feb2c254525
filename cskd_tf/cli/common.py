"""What every command-line tool shares: quiet TensorFlow, config flags with
overrides, and one-line errors with a non-zero exit status."""

from __future__ import annotations

import json
import os
import sys

# Before TensorFlow is imported anywhere: keep its C++ start-up chatter off the terminal.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

from cskd_tf.errors import ConfigError, CSKDError  # noqa: E402


def run(main):
    """absl's app.run with CSKDError and Ctrl-C turned into one-line messages."""
    from absl import app

    def guarded(argv):
        try:
            return main(argv)
        except CSKDError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(error.exit_code)
        except KeyboardInterrupt:
            print("interrupted: rerun the same command to continue from the last completed epoch",
                  file=sys.stderr)
            sys.exit(130)

    _quiet_absl_flag_errors()
    app.run(guarded)


def _quiet_absl_flag_errors():
    """absl prints a flag error plus a help hint on two lines; keep it to one."""
    from absl import app

    def handler(exc):  # pragma: no cover - exercised through the CLI tests
        print(f"error: {exc}; see --helpfull for the flags", file=sys.stderr)
        sys.exit(2)

    app.parse_flags_with_usage = _wrap_parse(handler, app.parse_flags_with_usage)


def _wrap_parse(handler, original):
    def parse(args):
        try:
            return flags.FLAGS(args)
        except flags.Error as exc:
            handler(exc)
    return parse


def load_config(config_flag_value, overrides_path=""):
    """Applies a JSON overrides file (e.g. cskd-tune's best.json) and validates."""
    from cskd_tf import config as config_lib

    if config_flag_value is None:
        raise ConfigError("no config given; pass --config=configs/NAME.py (see configs/)")
    config = config_flag_value
    if overrides_path:
        if not os.path.exists(overrides_path):
            raise ConfigError(f"--config_overrides file {overrides_path} does not exist")
        try:
            with open(overrides_path) as f:
                overrides = json.load(f)
        except json.JSONDecodeError as error:
            raise ConfigError(f"--config_overrides file {overrides_path} is not valid JSON "
                              f"({error})") from None
        unknown = [k for k in overrides if k not in config]
        if unknown:
            raise ConfigError(f"--config_overrides names unknown config fields: {', '.join(unknown)}")
        with config.unlocked():
            for key, value in overrides.items():
                config[key] = tuple(value) if isinstance(value, list) else value
    return config_lib.validate(config)
