# Runs Debian's nyx 2.1 with its --debug log working on Python 3.8 and
# later: nyx calls platform.dist() (removed in Python 3.8) only to write
# the platform into the debug log's header, and dies there.
import platform
import sys

if not hasattr(platform, 'dist'):
    platform.dist = lambda: ('', '', '')
sys.argv[0] = 'nyx'
import nyx
sys.exit(nyx.main())
