import sys

from meterkit.cli import main

sys.exit(main())
