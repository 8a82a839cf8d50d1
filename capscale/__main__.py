import sys

from capscale.cli import main

sys.exit(main())
