import sys

from dicomtrace.cli import main

sys.exit(main())
