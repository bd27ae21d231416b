import sys

from distilforge.cli import main

sys.exit(main())
