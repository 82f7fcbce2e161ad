"""The ttbridge benchmark: `python -m bench [--quick]`. See bench/__main__.py and bench/run.py."""
