"""crdt-merge-driver: merge AI agents' memory files inside git as a CRDT."""

__version__ = "0.1.0"

PROGRAM = "crdt-merge-driver"  # the command's name, which starts every line it says
# Set (to anything but 0), the driver hands every merge to git's own text merge.
KILL_SWITCH = "CRDT_MERGE_DRIVER_DISABLE"
