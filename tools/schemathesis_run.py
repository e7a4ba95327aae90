"""Runs the schemathesis CLI, guarding against a CPython 3.11.7 bug.

On CPython 3.11.7, `ast.parse` called deep in a recursion can raise
`SystemError: AST constructor recursion depth mismatch` (fixed in 3.11.8). Hypothesis parses
lambda sources only to describe strategies in its messages, so a description it cannot build
is replaced by `lambda: <unknown>` instead of aborting the run. Nothing else changes.
"""

import sys

from hypothesis.internal import lambda_sources

_describe = lambda_sources._lambda_description


def _describe_or_unknown(f, *args, **kwargs):
    try:
        return _describe(f, *args, **kwargs)
    except SystemError:
        return "lambda: <unknown>"


lambda_sources._lambda_description = _describe_or_unknown

from schemathesis.cli import schemathesis  # noqa: E402  (after the guard is in place)

if __name__ == "__main__":
    sys.exit(schemathesis())
