import sys

from hadskip.cli import main

sys.exit(main())
