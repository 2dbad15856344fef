"""`python -m convnet ...` runs the command line."""
import sys

from convnet.cli import main

sys.exit(main())
