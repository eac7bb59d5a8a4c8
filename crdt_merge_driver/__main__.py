"""``python -m crdt_merge_driver``: the command line, and the way git runs the merge driver."""

import atexit
import os
import sys

from crdt_merge_driver.cli import main

code = main()
# git starts the driver once per merged file and waits for it to exit. A
# normal exit then tears the interpreter down, freeing every module, which
# takes about 5 ms: longer than merging a small memory file. So exit at once,
# after what a normal exit must still do: the exit handlers (coverage's, in
# the tests) and the output.
atexit._run_exitfuncs()  # the one way to run them and not the teardown
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
