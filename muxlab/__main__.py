import sys

from muxlab.cli import main

sys.exit(main())
