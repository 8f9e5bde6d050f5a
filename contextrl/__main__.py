import sys

from contextrl.cli import main

sys.exit(main())
