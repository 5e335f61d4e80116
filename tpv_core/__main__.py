import sys

from tpv_core.cli import main

sys.exit(main())
