"""Build hook: the modules listed under ``[tool.qmpreplay] compiled`` in ``pyproject.toml``
(the session reader, the replay's hot path and the trace writer) are compiled with mypyc.

The same source runs about 3x faster compiled (``benchmarks/``) and gives the same outputs
(``tests/test_compiled.py``). Compiling is optional: without a C compiler, or if mypyc
fails, the install succeeds and everything runs as plain Python. Everything else is
configured in ``pyproject.toml``.
"""

import sys
import tomllib

from setuptools import setup

with open("pyproject.toml", "rb") as f:
    modules = tomllib.load(f)["tool"]["qmpreplay"]["compiled"]
try:
    from mypyc.build import mypycify

    extensions = mypycify(modules, opt_level="3")
except (Exception, SystemExit) as error:  # mypyc reports type errors by exiting
    print(f"warning: nothing compiled, all modules stay plain Python: {error}", file=sys.stderr)
    extensions = []
for extension in extensions:
    extension.optional = True  # a failed compile leaves the plain-Python modules

setup(ext_modules=extensions)
