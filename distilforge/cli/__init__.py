"""The command line: a thin layer over distilforge.pipeline.

Exit codes: 0 success, 1 a build or check failed, 2 a usage error or bad input. The grammar is in parser.py, what
each command does in commands.py, the terminal and the library log in terminal.py.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
import warnings

from distilforge.cli import terminal
from distilforge.cli.parser import build_parser
from distilforge.errors import EXIT_FAILED, EXIT_USAGE, DistilforgeError
from distilforge.libraries import for_our_process


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and getattr(args, "command", None) == "predict" and not any(e.startswith("-") for e in extra):
        args.texts += extra  # texts after an option: `predict DIR --target T "a text"`
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    _silence_libraries()
    with terminal.library_output_to_log(enabled=not getattr(args, "verbose", False)) as log:
        try:
            return args.func(args)
        except DistilforgeError as e:
            terminal.err(f"distilforge: error: {e}")
            return e.exit_code
        except KeyboardInterrupt:
            terminal.err("distilforge: interrupted")
            return 130
        except Exception as e:  # a bug or a library failure we did not foresee: one line, details in the log
            traceback.print_exc()
            log.keep = True
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            terminal.err(f"distilforge: internal error: {type(e).__name__}: {first} (traceback in {log.path})")
            return EXIT_FAILED


def _silence_libraries() -> None:
    """Library noise (torchao's pytree warnings, TF's C++ logs) must not drown our one-line errors."""
    for_our_process()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore")
    for name in ("torch", "transformers", "onnxscript", "nncf", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)



if __name__ == "__main__":
    sys.exit(main())
