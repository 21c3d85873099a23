"""`python -m mmx` runs the same CLI as the `mmx` console script."""

from mmx.cli import main

if __name__ == "__main__":
    main()
