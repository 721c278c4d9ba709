"""Benchmarks: `python -m bench.<name> --help`. Each prints and returns a JSON dict."""
