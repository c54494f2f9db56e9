"""Entry point for `python app.py` and Hugging Face Spaces: build the sdviz app and launch it."""

from sdviz.ui import main

if __name__ == "__main__":
    main()
