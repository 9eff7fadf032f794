import sys

from aptune.cli import main

sys.exit(main())
