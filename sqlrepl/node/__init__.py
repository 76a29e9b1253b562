"""The asyncio edge: daemons and their roles, the HA loop, HTTP server and client.

daemon       run a node: one file, one port, the role changes, the process stays
supervisor   every background task of a role under one TaskGroup; loud failures
leader       the leader role; leader_http, batches, retention, snapshots
follower     the follower role; follower_http, replication
ha           the HA loop carrying out core.decisions
http, client the HTTP server pieces and the client; database: the file's thread
watch, spool file events; a batch spool
"""
