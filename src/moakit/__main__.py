"""`python -m moakit`: the same command line as `moakit`."""

from moakit.cli import main

if __name__ == "__main__":
    main()
