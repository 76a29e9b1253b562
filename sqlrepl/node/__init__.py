"""The asyncio edge: daemons and their roles, the HA loop, HTTP server and client.

daemon       run a node: one file, one port, the role changes, the process stays
configs      each role's settings, frozen
supervisor   every background task of a role under one TaskGroup; loud failures
leader/      the leader role: write gate, capture in step with the schema, batches,
             followers and acknowledgements, handovers, its HTTP API
follower/    the follower role: its file, replication, applying, the archive, its API
ha           the HA loop carrying out core.decisions
snapshots    serving pinned images; transfer: receiving them
http, client the HTTP server pieces and the client; database: the file's thread
"""
