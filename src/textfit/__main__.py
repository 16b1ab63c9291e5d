import sys

from textfit.cli.parser import main

sys.exit(main())
