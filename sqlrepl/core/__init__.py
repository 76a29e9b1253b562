"""The pure core: apsw connections and plain values only.

No asyncio, HTTP, coordination client, file watching, threads or clocks that cannot be
passed in; a test (tests/unit/test_layers.py) keeps it so. Modules:

    sql        SQL text builders (every identifier through one quoting helper)
    db         opening files, transactions, the meta table
    positions  Position and reading a node's position from its file
    schema     what a user schema looks like
    capture    the change log and its triggers on a leader
    batch      building a batch in one read transaction
    apply      replaying a batch on a follower
    wire       framing, the batch header and table shapes, HTTP names
    gate       the write gate
    roles      promote, demote, epochs and their history
    rollback   a deposed leader's divergent changes
    snapshot   consistent copies stamped with their position
    decisions  the HA decisions (view in, action and sentence out)
"""
