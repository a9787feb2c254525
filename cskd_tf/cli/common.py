"""What every command-line tool shares: quiet TensorFlow, config flags with
overrides, and one-line errors with a non-zero exit status."""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile

# Before TensorFlow is imported anywhere: keep its C++ start-up chatter off the terminal.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def import_tensorflow_quietly():
    """TF 2.21 prints oneDNN/CUDA notices to fd 2 before its log level applies.

    They are swallowed at import; if the import fails they are replayed so
    the cause stays visible.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow

            # The first device query logs a cuInit failure on machines without a GPU.
            tensorflow.config.list_physical_devices("GPU")
        except BaseException:
            os.dup2(saved, 2)
            capture.seek(0)
            sys.stderr.write(capture.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


from absl import flags  # noqa: E402

from cskd_tf.errors import ConfigError, CSKDError  # noqa: E402
from cskd_tf.runs.files import blocking_file  # noqa: E402


def run(main, needs_tensorflow=True):
    """absl's app.run with CSKDError and Ctrl-C turned into one-line messages.

    Tools that only read JSON (cskd-report) pass ``needs_tensorflow=False`` and
    start without paying for the TensorFlow import; so does cskd-train, whose main
    validates the config first and then imports it.
    """
    from absl import app

    def guarded(argv):
        try:
            # Flags are parsed and the config files loaded before the TensorFlow import
            # (several seconds), so a bad flag or config file fails at once; a tool's main
            # may check more first and import it itself (import_tensorflow_quietly).
            if needs_tensorflow:
                import_tensorflow_quietly()
            return main(argv)
        except CSKDError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(error.exit_code)
        except KeyboardInterrupt:
            print("interrupted: rerun the same command to continue from the last completed epoch",
                  file=sys.stderr)
            sys.exit(130)

    from absl import logging

    # TensorFlow's checkpoint code logs every save at INFO through absl.
    logging.set_verbosity(logging.WARNING)
    app.run(guarded, flags_parser=_parse_flags)


def _parse_flags(argv):
    """Flag errors as one line (absl prints two; config_flags raises bare
    AttributeError/KeyError for an unknown --config.FIELD)."""
    try:
        try:
            argv = flags.FLAGS(argv)
        except (CSKDError, SyntaxError, OSError):
            raise
        except Exception as exc:
            failed = _failed_config_file(exc)
            if failed is None:
                raise
            raise failed from None
        _check_config_files()
        return argv
    except CSKDError as exc:  # raised by a config file's get_config (e.g. configs/paper.py)
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except SyntaxError as exc:  # a --config file that is not Python
        print(f"error: config file {exc.filename} line {exc.lineno} is not valid Python "
              f"({exc.msg}); pass --config=PATH to a config file such as "
              "configs/digits_quick.py", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:  # a --config file that did not load, read by a --config.X override
        print(f"error: {_config_file_error(exc)}", file=sys.stderr)
        sys.exit(2)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as exc:
        message = str(exc).strip()
        if isinstance(exc, (AttributeError, KeyError)):
            message = unknown_field_message(exc)
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def _failed_config_file(exc):
    """The ConfigError for an exception a --config file raised while it was loaded (its
    get_config missing or failing, an import in it failing), else None.

    ml_collections' ConfigFileFlagParser.parse runs the file; its frame, found in the
    traceback of ``exc`` or of the error ``exc`` was raised from (absl wraps TypeError and
    ValueError), holds the path. The message is the failure's last line, without the
    trace ml_collections pastes into a TypeError's or ValueError's text.
    """
    from ml_collections.config_flags.config_flags import ConfigFileFlagParser

    seen = exc
    while seen is not None:
        tb = seen.__traceback__
        while tb is not None:
            frame = tb.tb_frame
            if (frame.f_code.co_name == "parse"
                    and isinstance(frame.f_locals.get("self"), ConfigFileFlagParser)):
                path = str(frame.f_locals.get("path", "?")).split(":", 1)[0]
                name = frame.f_locals["self"].name
                return _config_file_failure(path, name, seen)
            tb = tb.tb_next
        seen = seen.__cause__ or seen.__context__
    return None


def _config_file_failure(path, name, error) -> ConfigError:
    """One line naming the config file and what went wrong in it."""
    text = str(error)
    if isinstance(error, AttributeError) and "get_config" in text:
        problem = "has no get_config() function; define get_config() returning the config"
    else:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        last = lines[-1] if lines else ""
        if not last.startswith(f"{type(error).__name__}:"):
            last = f"{type(error).__name__}: {last}"
        problem = f"failed to load ({last}); fix the file"
    return ConfigError(f"config file {path} {problem}, or pass --{name}=PATH to a config file "
                       "such as configs/digits_quick.py")


def unknown_field_message(exc) -> str:
    """One line for ml_collections' unknown-field error of a --config.FIELD override.

    ml_collections raises a KeyError/AttributeError whose text is the quoted field name,
    possibly followed by a line 'Did you mean "X" instead of "Y"?'; str() of a KeyError
    quotes all of that again, so the text is taken from the exception's argument.
    """
    text = str(exc.args[0]) if exc.args else str(exc)
    # The argument may itself be a repr ('\'lamda_cls\'\nDid you mean ...'): the field is
    # the first name in it.
    found = re.search(r"[A-Za-z_][\w]*", text)
    field = found.group(0) if found else "?"
    suggestion = re.search(r'Did you mean \\?"([^"\\]+)\\?"', text)
    better = suggestion.group(1) if suggestion else None
    # A group's field (--config.kd.temprature): name the whole path the user typed.
    for arg in sys.argv[1:]:
        path = arg.split("=", 1)[0]
        if path.startswith("--config.") and field in path.split(".")[1:]:
            parts = path.split(".")[1:]
            if better:
                better = ".".join(better if p == field else p for p in parts)
            field = ".".join(parts)
            break
    if better:
        return f"unknown config field '{field}'; did you mean '{better}'?"
    return f"unknown config field '{field}'; see cskd_tf/config.py for the fields"


def _check_config_files():
    """ConfigError for a --config file that did not load.

    ml_collections defers that failure (an OSError with a traceback on the config's first
    use); here it becomes one line saying which file and why.
    """
    from ml_collections import config_flags

    for name in list(flags.FLAGS):
        flag = flags.FLAGS[name]
        if not flag.present:
            continue
        try:
            config_flags.get_config_filename(flag)
        except TypeError:  # not a config flag
            continue
        try:
            getattr(flag.value, "keys", None)
        except OSError as error:
            raise _config_file_error(error, name) from None
        if flag.value is None:
            raise ConfigError(f"config file {config_flags.get_config_filename(flag)}: "
                              "get_config() returned None; end it with 'return config'")


def _config_file_error(error: OSError, name="config") -> ConfigError:
    """The one-line ConfigError for ml_collections' "failed loading config file" OSError."""
    text = str(error.__cause__ or error)
    missing = re.search(r"No such file or directory: '([^']*)'", text)
    if missing:
        return ConfigError(f"config file {missing.group(1)} does not exist; pass --{name}=PATH "
                           "to a config file such as configs/digits_quick.py")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return ConfigError(f"cannot load the --{name} file ({lines[-1] if lines else text}); pass "
                       f"--{name}=PATH to a readable config file such as configs/digits_quick.py")


def check_output_file(path, flag="--output", suffixes=()):
    """ConfigError unless ``path`` can become a file: not a folder, no file among its
    parents, and (when ``suffixes`` are given) one of those endings. Checked before the
    work whose result it will hold."""
    if suffixes and os.path.splitext(path)[1].lower() not in suffixes:
        raise ConfigError(f"{flag}={path} must end in {', '.join(suffixes)} (the format is "
                          f"taken from the ending); pass e.g. {flag}=plot{suffixes[0]}")
    if os.path.isdir(path):
        raise ConfigError(f"{flag}={path} is a folder; pass {flag}=FILE, a file path")
    blocking = blocking_file(os.path.dirname(os.path.abspath(path)))
    if blocking is not None:
        raise ConfigError(f"{flag}={path} lies below {blocking}, a file, not a folder; pass "
                          f"{flag}=FILE in a folder")


def refuse_arguments(argv):
    """ConfigError for positional arguments a command does not take (absl leaves them in
    ``argv[1:]``; a mistyped flag such as ``-config=...`` would otherwise be ignored)."""
    if len(argv) > 1:
        raise ConfigError(f"unexpected arguments: {' '.join(argv[1:])}; write flags as "
                          "--NAME=VALUE and config fields as --config.FIELD=VALUE")


def _first_line(error):
    """An exception's message without ml_collections' quoting or appended trace."""
    text = str(error.args[0]) if error.args else str(error)
    return next((line.strip() for line in text.splitlines() if line.strip()),
                type(error).__name__)


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
        if not isinstance(overrides, dict):
            raise ConfigError(f"--config_overrides file {overrides_path} holds a JSON "
                              f"{type(overrides).__name__}, not an object of config fields; "
                              'write it as {"FIELD": VALUE, ...} (as cskd-tune\'s best.json)')
        unknown = [k for k in overrides if k not in config]
        if unknown:
            raise ConfigError(f"--config_overrides names unknown config fields: "
                              f"{', '.join(unknown)}")
        with config.unlocked():
            for key, value in overrides.items():
                try:
                    if isinstance(value, dict):  # a method group: set only the fields it names
                        config[key].update(value)
                    else:
                        config[key] = tuple(value) if isinstance(value, list) else value
                except (AttributeError, KeyError, TypeError, ValueError) as error:
                    raise ConfigError(f"--config_overrides file {overrides_path}: {key}="
                                      f"{value!r} does not fit config.{key} "
                                      f"({_first_line(error)}); fix that value") from None
    return config_lib.validate(config)
