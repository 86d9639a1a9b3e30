import sys

from srlm.cli import main

sys.exit(main())
