"""``speakerid <command>``: argument parsing only (``main``: the parser and dispatch; ``db``: the
speaker-DB commands; ``args``: parser pieces both share). The work lives in library functions."""
