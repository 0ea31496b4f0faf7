"""``python -m vlground`` (also ``accelerate launch -m vlground``)."""
import sys

from vlground.cli import main

if __name__ == "__main__":
    sys.exit(main())
