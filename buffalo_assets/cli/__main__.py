"""`python -m buffalo_assets.cli`: the `buffalo` command."""

from buffalo_assets.cli import main

if __name__ == "__main__":
    main()
