import sys

from devtools.bench.runner import main

sys.exit(main())
