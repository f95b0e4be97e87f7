import sys

from medws.cli import main

sys.exit(main())
