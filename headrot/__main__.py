import sys

from headrot.cli import main

sys.exit(main())
