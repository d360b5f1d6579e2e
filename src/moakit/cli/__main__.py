"""`python -m moakit.cli`: the same command line as `moakit`."""

from moakit.cli import main

if __name__ == "__main__":  # pragma: no cover
    main()
