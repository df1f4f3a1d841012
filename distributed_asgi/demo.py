"""`make demo`: the main job. For now the channel layer tour; the gateway demo replaces it."""

import sys

from .layer_demo import main

if __name__ == "__main__":
    sys.exit(main())
