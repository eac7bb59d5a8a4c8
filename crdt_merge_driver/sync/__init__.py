"""sync: every machine's commits landed on the remote, in a loop of fetch, integrate, push.

``landing`` is the loop, one attempt at a time; the other modules are its
parts (the clone, its lock and session, the replay and rebase that
integrate, the queue of commits that lost a race, the checks before a push,
git's verdicts). Nothing is imported here: ``backup`` from cron imports only
the parts an idle run needs. docs/architecture.md has the map.
"""
