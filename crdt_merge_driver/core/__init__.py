"""The pure core: memory files as bytes in, canonical bytes out; no I/O, never git.

``merge`` is the 3-way merge and the N-way join; ``codec`` reads a file
against its ancestor; ``document`` holds a file's records and layout;
``record``, ``value`` and ``clock`` are one record, one JSON value and one
stamp; ``envelope`` the single-object memories; ``live`` the two bridges to
a live file. docs/architecture.md has the map.
"""
