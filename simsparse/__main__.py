"""`python -m simsparse …` is the `simsparse` CLI."""

from simsparse.cli import main

if __name__ == "__main__":
    main()
