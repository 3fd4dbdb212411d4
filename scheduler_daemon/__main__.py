import sys

from scheduler_daemon.cli import main

sys.exit(main())
