"""Delivery: the clients that carry messages out (SMTP senders, the connection pool and rate
limits, files for a file channel). The channel blocks (blocks/channels.py) open them."""
