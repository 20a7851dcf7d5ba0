"""``python -m m3_rag.cli``: the same as the ``m3-rag`` command."""

from m3_rag.cli.app import main

if __name__ == "__main__":
    main()
