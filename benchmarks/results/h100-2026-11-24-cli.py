"""python cli.py PACKAGE ARGS...: PACKAGE.cli.main(ARGS) (the console scripts without installing them)."""
import importlib
import sys

sys.exit(importlib.import_module(sys.argv[1] + ".cli").main(sys.argv[2:]))
