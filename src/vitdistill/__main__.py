import sys

from vitdistill.cli import main

sys.exit(main())
